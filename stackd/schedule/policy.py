"""The day's policy, pure: (config, remembered state, what runs now) -> the stack meant to run and why.

No I/O and no clock: ``decide`` is given ``World.now`` and returns a ``Decision`` with the state to
remember next. The daemon's driver (``stackd.manager.day``) persists that state and applies the
action on the manager's worker; ``bench/day.py`` replays a day through the same function.

The stack meant to run is found in three layers, each overriding the one below:

1. the **upper** stack: a live hold (a manual switch holds until the next window begins, or for
   the ``--hold`` it was given), else the window current now, else the stack that runs;
2. **idle**: the upper stack, running without a call to a member for its ``idle.after_s``
   (leases and streams count as calls), is replaced by its ``idle.to`` until a call wakes it
   (``wake_target``) or the upper stack changes (a new window, a hold). The lower stack's own
   ``idle:`` is followed in turn (A idles to B, B to C), one step per quiet ``after_s``, at most
   as many steps as there are stacks and never back onto the chain (the config refuses a cycle);
   a call still wakes the upper stack;
3. **never interrupt**: a change waits while a switch runs or a live lease holds a member the new
   stack lacks, and says so; after ``defer_max_s`` it gives up until the upper stack changes.

Missed windows (the daemon was stopped): every start missed is coalesced into the window current
now. Missed by at most ``misfire_grace_s`` it fires as late; missed by more it is reported as
missed, and the window current now applies just the same (it is the schedule's answer for now).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from stackd.config.models import StacksConfig
from stackd.config.schedules import IdleRule
from stackd.schedule.windows import WindowStart, current_window, local_time, next_window

Action = Literal["none", "switch", "wait", "give_up"]


@dataclass(frozen=True, slots=True)
class Hold:
    """Keep ``stack`` until ``until`` (Unix s; None: until a window begins, with no schedule: for good)."""

    stack: str
    until: float | None
    set_at: float
    source: str  # "manual switch", "--hold 2h" ...


@dataclass(frozen=True, slots=True)
class Downshift:
    """``upper`` went idle and ``lower`` runs instead, since ``at``; ``depth`` steps down the
    idle chain (1: ``upper``'s own ``idle.to``)."""

    upper: str
    lower: str
    at: float
    depth: int = 1


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the driver persists between evaluations (and across restarts)."""

    hold: Hold | None = None
    downshift: Downshift | None = None
    seen_window: float | None = None  # the start of the last window the policy has taken up
    waiting_since: float | None = None  # when the pending change first had to wait
    gave_up: str | None = None  # the change abandoned after defer_max_s (its key)


@dataclass(frozen=True, slots=True)
class LeaseView:
    model: str
    expires_at: float
    lease_id: str


@dataclass(frozen=True, slots=True)
class World:
    """What runs now, as the driver observed it."""

    now: float
    active: str | None
    active_since: float | None  # when the active stack's last switch ended (or the daemon started)
    last_use: float | None  # the last call to a member of the active stack (a live lease or stream: now)
    switching: str | None = None  # why a switch holds the slot now, else None
    leases: tuple[LeaseView, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    upper: str | None
    upper_why: str
    intended: str | None
    why: str
    action: Action
    window: WindowStart | None
    next_change: WindowStart | None
    state: PolicyState
    notes: tuple[str, ...] = ()  # events of this evaluation for the log (a hold ended, a window missed)


def hold_until_next(config: StacksConfig, stack: str, now: float, source: str = "manual switch") -> Hold:
    """The hold a manual switch takes: until the next window begins (for good without a schedule)."""
    nxt = next_window(config.schedules, now) if config.schedules is not None else None
    return Hold(stack, nxt.at if nxt is not None else None, now, source)


def _take_up_window(
    config: StacksConfig, state: PolicyState, window: WindowStart | None, now: float
) -> tuple[PolicyState, list[str]]:
    """A window that began since the last evaluation ends a hold from before it and an idle
    downshift of the stack before it; a start missed while stopped is reported."""
    schedules = config.schedules
    if (
        window is None
        or schedules is None
        or (state.seen_window is not None and window.at <= state.seen_window)
    ):
        return state, []
    notes: list[str] = []
    late = now - window.at
    begun = f"window {window.index} ('{window.stack}') began at {local_time(schedules, window.at)}"
    if state.seen_window is None or late <= schedules.tick_s * 2:
        notes.append(begun)
    elif late <= schedules.misfire_grace_s:
        notes.append(f"{begun}: fired {late:.0f} s late (within misfire_grace_s)")
    else:
        notes.append(
            f"{begun} while stackd was stopped (missed by {late:.0f} s, beyond misfire_grace_s "
            f"{schedules.misfire_grace_s:g} s): the window current now applies"
        )
    hold = state.hold
    if hold is not None and hold.until is None and hold.set_at < window.at:
        notes.append(f"the hold on '{hold.stack}' ended: a window began")
        hold = None
    return replace(state, hold=hold, downshift=None, seen_window=window.at, gave_up=None), notes


def decide(config: StacksConfig, state: PolicyState, world: World) -> Decision:
    """The stack meant to run now, why, and what to do about it (see the module's docstring)."""
    schedules = config.schedules
    window = current_window(schedules, world.now) if schedules is not None else None
    nxt = next_window(schedules, world.now) if schedules is not None else None
    state, window_notes = _take_up_window(config, state, window, world.now)
    upper = _upper_stack(config, state, window, world)
    intended = _idle_downshift(config, upper, world)
    plan = Decision(
        upper.stack,
        upper.why,
        intended.stack,
        intended.why,
        "none",
        window,
        nxt,
        intended.state,
        (*window_notes, *upper.notes, *intended.notes),
    )
    return _never_interrupt(config, world, plan)


@dataclass(frozen=True, slots=True)
class _Pick:
    """One layer's answer: the stack it picks, why, the state it leaves and its log notes."""

    state: PolicyState
    stack: str | None
    why: str
    notes: tuple[str, ...] = ()


def _upper_stack(config: StacksConfig, state: PolicyState, window: WindowStart | None, world: World) -> _Pick:
    """Layer 1: a live hold (an ended one is dropped), else the window current now, else the
    stack an idle downshift replaced, else the stack that runs."""
    notes: list[str] = []
    hold = state.hold
    if hold is not None and (
        hold.stack not in config.stacks or (hold.until is not None and world.now >= hold.until)
    ):
        notes.append(f"the hold on '{hold.stack}' ended")
        state = replace(state, hold=None, gave_up=None)
        hold = None

    if hold is not None:
        until = "for good" if hold.until is None else _until(config, hold.until)
        return _Pick(state, hold.stack, f"held by {hold.source} {until}", tuple(notes))
    if window is not None and window.stack in config.stacks:
        assert config.schedules is not None
        why = f"window {window.index} since {local_time(config.schedules, window.at)}"
        return _Pick(state, window.stack, why, tuple(notes))
    if state.downshift is not None:
        return _Pick(state, state.downshift.upper, "the stack that ran before it went idle", tuple(notes))
    return _Pick(state, world.active, "no schedule and no hold: the stack that runs", tuple(notes))


def _idle_downshift(config: StacksConfig, upper: _Pick, world: World) -> _Pick:
    """Layer 2: the upper stack, quiet for its ``idle.after_s``, gives way to its ``idle.to``; a
    downshift already under way follows the lower stack's own ``idle:`` one step further, or stays.
    The answer's notes are this layer's only."""
    now = world.now
    downshift = upper.state.downshift
    if downshift is not None and downshift.upper != upper.stack:
        downshift = None
    intended, why = upper.stack, upper.why
    notes: list[str] = []
    rule = (
        config.stacks[upper.stack].idle if upper.stack is not None and upper.stack in config.stacks else None
    )
    if downshift is not None:
        downshift, why, notes = _follow_downshift(config, downshift, world)
        intended = downshift.lower
    elif (
        rule is not None
        and upper.stack is not None
        and upper.stack == world.active
        and world.switching is None
        and world.active_since is not None
    ):
        quiet_since = max(world.active_since, world.last_use or world.active_since)
        if now - quiet_since >= rule.after_s and rule.to in config.stacks:
            downshift = Downshift(upper.stack, rule.to, now)
            intended = rule.to
            why = f"'{upper.stack}' had no call for {now - quiet_since:.0f} s (idle.after_s {rule.after_s:g})"
            notes.append(f"idle: '{upper.stack}' -> '{rule.to}'")
    return _Pick(replace(upper.state, downshift=downshift), intended, why, tuple(notes))


def _follow_downshift(
    config: StacksConfig, downshift: Downshift, world: World
) -> tuple[Downshift, str, list[str]]:
    """A downshift under way: one step further down the idle chain when its lower stack has been
    quiet long enough (``_idle_further``), else as it is; with why and the log notes."""
    deeper = _idle_further(config, downshift, world)
    if deeper is not None:
        quiet_s, rule = deeper
        note = f"idle: '{downshift.lower}' -> '{rule.to}' (idle chain of '{downshift.upper}')"
        why = (
            f"'{downshift.lower}' had no call for {quiet_s:.0f} s (its idle.after_s {rule.after_s:g}); "
            f"a call for the roles of '{downshift.upper}' wakes it"
        )
        return Downshift(downshift.upper, rule.to, world.now, downshift.depth + 1), why, [note]
    if downshift.depth > 1:
        why = (
            f"'{downshift.upper}' went idle, and its idle chain reached '{downshift.lower}' at "
            f"{_at(config, downshift.at)}; a call for its roles wakes it"
        )
    else:
        why = f"'{downshift.upper}' went idle at {_at(config, downshift.at)}; a call for its roles wakes it"
    return downshift, why, []


def _change_key(intended: str, state: PolicyState, window: WindowStart | None) -> str:
    """Names a pending change by its target and what asked for it (the hold, the window or the
    downshift), so a change given up on stays given up until the upper stack changes."""
    hold, downshift = state.hold, state.downshift
    return f"{intended}@{(hold.set_at if hold else None) or (window.at if window else None) or (downshift.at if downshift else 0):.0f}"


def _never_interrupt(config: StacksConfig, world: World, plan: Decision) -> Decision:
    """Layer 3: ``plan`` (action "none") as it goes ahead: switch now, or wait while a switch runs
    or a live lease holds a member the new stack lacks, giving up after ``defer_max_s``."""
    intended, active, state, now = plan.intended, world.active, plan.state, world.now
    if intended is None or intended == active:
        return replace(plan, state=replace(state, waiting_since=None))
    key = _change_key(intended, state, plan.window)
    if state.gave_up == key:
        return replace(
            plan, why=f"{plan.why}; gave up waiting: '{active}' stays until the next window or hold"
        )
    blocker = world.switching or _blocking_lease(config, intended, world)
    if blocker is None:
        return replace(plan, action="switch", state=replace(state, waiting_since=None))
    since = state.waiting_since if state.waiting_since is not None else now
    bound = config.schedules.defer_max_s if config.schedules is not None else DEFAULT_DEFER_MAX_S
    if now - since >= bound:
        return replace(
            plan,
            why=f"{plan.why}; gave up: {blocker}",
            action="give_up",
            state=replace(state, waiting_since=None, gave_up=key),
            notes=(*plan.notes, f"gave up switching to '{intended}' after {now - since:.0f} s: {blocker}"),
        )
    waiting = f"{plan.why}; waits ({now - since:.0f} of {bound:g} s): {blocker}"
    return replace(plan, why=waiting, action="wait", state=replace(state, waiting_since=since))


DEFAULT_DEFER_MAX_S = 1800.0


def _idle_further(config: StacksConfig, downshift: Downshift, world: World) -> tuple[float, IdleRule] | None:
    """(quiet seconds, the rule) when the lower stack of ``downshift`` runs, has its own ``idle:``
    and has had no call for its ``after_s``: the chain goes one step further down. Never onto a
    stack already on the chain (its upper or lower) and at most ``len(config.stacks)`` steps, so
    a cycle the config loader would refuse still ends."""
    lower = config.stacks.get(downshift.lower)
    rule = lower.idle if lower is not None else None
    if (
        rule is None
        or world.active != downshift.lower
        or world.switching is not None
        or world.active_since is None
        or rule.to not in config.stacks
        or rule.to in (downshift.upper, downshift.lower)
        or downshift.depth >= len(config.stacks)
    ):
        return None
    quiet_s = world.now - max(world.active_since, world.last_use or world.active_since)
    return (quiet_s, rule) if quiet_s >= rule.after_s else None


def _blocking_lease(config: StacksConfig, target: str, world: World) -> str | None:
    """A live lease on a member that ``target`` does not keep: the switch would stop it."""
    keeps = set(config.stacks[target].member_names) if target in config.stacks else set()
    for lease in world.leases:
        if lease.model not in keeps and lease.expires_at > world.now:
            return (
                f"lease {lease.lease_id} holds {lease.model} until {_at(config, lease.expires_at)} "
                f"and '{target}' does not run it"
            )
    return None


def wake_target(
    config: StacksConfig, decision: Decision, active: str | None, role: str | None, model: str | None
) -> str | None:
    """The stack a call wakes: the upper stack, when it serves the ``role`` (or has the ``model``)
    and the active stack does not; else None (the call is answered, or refused, as it is)."""
    upper = decision.upper
    if upper is None or upper == active or upper not in config.stacks:
        return None

    def serves(stack: str | None) -> bool:
        if stack not in config.stacks:
            return False
        assert stack is not None
        s = config.stacks[stack]
        return (role is not None and role in s.roles) or (model is not None and model in s.member_names)

    return upper if serves(upper) and not serves(active) else None


def _at(config: StacksConfig, at: float) -> str:
    if config.schedules is None:
        return f"t={at:.0f}"
    return local_time(config.schedules, at)


def _until(config: StacksConfig, at: float) -> str:
    return f"until {_at(config, at)}"
