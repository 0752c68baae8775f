"""``DayDriver``: applies the day policy (``stackd.schedule.policy``) through the manager.

Each ``tick`` observes (active stack, when it became active, the last call to its members, a
running switch, live leases), asks the pure ``decide`` and does what it says: a switch through
``manager.submit_switch`` (planned and run on the manager's worker, like any switch), or nothing,
with the reason kept for ``/schedule`` and ``/status``. Its state (hold, downshift, the last
window taken up) is persisted after every change, so a restart resumes it.

``wake`` is the wake-on-demand half: a call for a role or model the active stack lacks but the
upper stack has switches to the upper stack and waits (bounded per role). Concurrent wakes of
one stack share one switch (one task per target), so a storm of calls makes one switch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Protocol

from stackd.config.models import Placement, StacksConfig
from stackd.errors import Conflict, StackdError
from stackd.schedule.policy import (
    Decision,
    Downshift,
    Hold,
    LeaseView,
    PolicyState,
    World,
    decide,
    hold_until_next,
    wake_target,
)
from stackd.schedule.wake import Woken, call_needs
from stackd.schedule.windows import local_time

if TYPE_CHECKING:
    from stackd.manager import ModelStackManager

log = logging.getLogger("stackd.manager.day")
DEFAULT_TICK_S = 15.0  # idle rules without a schedule
DEFAULT_WAKE_WAIT_S = 120.0  # a held or scheduled stack without an idle rule


class PolicyMemory(Protocol):
    """Where the policy's state lives (``stackd.state.day_policy.DayPolicyStore``). Blocking, fast."""

    def load(self) -> dict[str, object]: ...

    def save(self, state: dict[str, object]) -> None: ...


class LeaseLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def expires_at(self) -> float: ...


class LiveLeases(Protocol):
    def live(self) -> Sequence[LeaseLike]: ...


def lease_views(leases: LiveLeases) -> list[LeaseView]:
    """The coordinator's live leases as the policy reads them."""
    return [LeaseView(lease.model, lease.expires_at, lease.id) for lease in leases.live()]


class WakeTimedOut(StackdError):
    """A call waited its bound for its stack to wake; the switch goes on (503, Retry-After)."""

    status = 503


class DayDriver:
    """The policy's shell. ``clock``: Unix seconds (windows are wall-clock times); ``leases``
    lists the live leases; ``sleep`` is how a wake polls a switch it waits behind."""

    def __init__(
        self,
        manager: ModelStackManager,
        memory: PolicyMemory,
        clock: Callable[[], float] = time.time,
        leases: Callable[[], Sequence[LeaseView]] = lambda: (),
    ) -> None:
        self.manager = manager
        self.memory = memory
        self.clock = clock
        self.leases = leases
        self.state = _state_from(memory.load())
        self.last: Decision | None = None
        self.last_switch_id: str | None = None
        self.wakes = 0  # switches started by wakes (a storm of calls counts one)
        self._active_since: float = clock()
        self._active_seen: str | None = manager.active_stack
        self._wakes: dict[str, asyncio.Task[str | None]] = {}

    @property
    def config(self) -> StacksConfig:
        return self.manager.config

    # ---------------------------------------------------------------- observing

    def world(self) -> World:
        now, manager = self.clock(), self.manager
        active = manager.active_stack
        if active != self._active_seen:  # a switch (any: scheduled, manual, woken) ended
            self._active_seen, self._active_since = active, now
        current = manager.current_switch
        switching = f"switch {current.id} to '{current.target}' is running" if current is not None else None
        return World(
            now=now,
            active=active,
            active_since=self._active_since,
            last_use=self._last_use(active, now),
            switching=switching,
            leases=tuple(self.leases()),
        )

    def _last_use(self, stack: str | None, now: float) -> float | None:
        """The last call to a member of ``stack`` (GPU members when it has any), in Unix seconds;
        ``now`` while a call runs on one or a lease holds one (streams and leases are use)."""
        if stack not in self.config.stacks:
            return None
        assert stack is not None
        names = self.config.stacks[stack].member_names
        gpu = [n for n in names if self.config.models[n].placement == Placement.gpu]
        watched = gpu or list(names)
        leased = {lease.model for lease in self.leases()}
        if any(self.manager.live_roles.in_flight.count(n) or n in leased for n in watched):
            return now
        monotonic_now = self.manager.clock()
        uses = [u for u in (self.manager.last_used(n) for n in watched) if u is not None]
        return now - (monotonic_now - max(uses)) if uses else None

    # ---------------------------------------------------------------- acting

    async def tick(self) -> Decision:
        """Evaluate the policy now and act on it; never raises for a refused switch (it is the
        decision's reason until the next tick)."""
        decision = decide(self.config, self.state, self.world())
        for note in decision.notes:
            log.info("day policy: %s", note)
        self._remember(decision.state)
        why = decision.why
        if decision.action == "switch" and decision.intended is not None:
            try:
                handle = await self.manager.submit_switch(decision.intended)
                self.last_switch_id = handle.id
                why = f"{why}; switching (switch {handle.id})"
            except Conflict as exc:
                why = f"{why}; waits: {exc.message}"
            except StackdError as exc:
                why = f"{why}; switch refused: {exc.message}"
                log.warning("day policy: switch to '%s' refused: %s", decision.intended, exc.message)
        self.last = _with_why(decision, why)
        return self.last

    async def tick_job(self) -> tuple[bool, str]:
        """``tick`` as a periodic job: (ok, the decision in one line)."""
        decision = await self.tick()
        return decision.action != "give_up", f"{decision.action}: {decision.intended} ({decision.why})"

    def jobs(self) -> dict[str, tuple[float, Callable[[], Awaitable[tuple[bool, str]]]]]:
        """The periodic job of the policy, when there is anything to follow (a schedule or an idle rule)."""
        config = self.config
        idle = [s.idle.after_s for s in config.stacks.values() if s.idle is not None]
        if config.schedules is None and not idle:
            return {}
        interval = config.schedules.tick_s if config.schedules is not None else DEFAULT_TICK_S
        # An idle rule is kept to a fifth of its time (at least a second): after_s 5 downshifts
        # within 6 s, not 15.
        interval = min([interval, *(max(1.0, after / 5) for after in idle)])
        return {"day": (interval, self.tick_job)}

    def hold(self, stack: str, hold_s: float | None, until_next: bool = True) -> Hold:
        """Record a manual switch to ``stack``: held for ``hold_s`` seconds, else until the next
        window begins (``until_next``)."""
        now = self.clock()
        if hold_s is not None:
            hold = Hold(stack, now + hold_s, now, f"--hold {hold_s:g}s")
        else:
            hold = hold_until_next(self.config, stack, now, "manual switch" if until_next else "--hold")
        self._remember(PolicyState(hold=hold, seen_window=self.state.seen_window))
        return hold

    def _remember(self, state: PolicyState) -> None:
        if state != self.state:
            self.state = state
            self.memory.save(_state_json(state))

    # ---------------------------------------------------------------- waking

    def begin(self, name: str) -> PendingWake | None:
        """``Waker.begin``: start waking the upper stack for a call that names a role or model
        (or a ``reason`` whose best strategy there needs one) the active stack lacks and the
        upper one has; None when nothing needs waking. Does not wait."""
        decision = self.last or decide(self.config, self.state, self.world())
        role, model = call_needs(self.config, name, decision.upper)
        if role is None and model is None:
            return None
        target = wake_target(self.config, decision, self.manager.active_stack, role, model)
        if target is None:
            return None
        task = self._wakes.get(target)
        if task is None or task.done():
            task = asyncio.ensure_future(self._switch_up(target))
            self._wakes[target] = task
        rule = self.config.stacks[target].idle
        limit = rule.wait_for(role) if rule is not None else DEFAULT_WAKE_WAIT_S
        return PendingWake(self, target, task, limit)

    async def wake(self, name: str) -> Woken | None:
        """``Waker.wake``: ``begin``, then wait for the stack (bounded per role). ``WakeTimedOut``
        when the bound passes first (the switch goes on)."""
        pending = self.begin(name)
        return None if pending is None else await pending.wait()

    async def _switch_up(self, target: str) -> str | None:
        """One switch to ``target`` for every call waiting on it; waits behind a running switch."""
        self._remember(_without_downshift(self.state))
        while True:
            if self.manager.active_stack == target and self.manager.current_switch is None:
                return None
            try:
                handle = await self.manager.submit_switch(target)
            except Conflict:
                running = self.manager.current_switch
                if running is not None:
                    await running.finished.wait()
                continue
            self.wakes += 1
            self.last_switch_id = handle.id
            log.info("day policy: a call woke '%s' (switch %s)", target, handle.id)
            state = await handle.wait()
            if state != "succeeded":
                raise WakeFailed(f"waking stack '{target}' failed: switch {handle.id} {state}", stack=target)
            return handle.id

    # ---------------------------------------------------------------- the view

    def view(self) -> dict[str, Any]:
        """``GET /schedule`` (and ``/status``'s ``schedule``): the window, the next change, the hold."""
        decision = self.last or decide(self.config, self.state, self.world())
        schedules = self.config.schedules

        def when(at: float | None) -> str | None:
            return local_time(schedules, at) if at is not None and schedules is not None else None

        hold = self.state.hold
        down = self.state.downshift
        return {
            "timezone": schedules.timezone if schedules is not None else None,
            "active": self.manager.active_stack,
            "upper": decision.upper,
            "intended": decision.intended,
            "action": decision.action,
            "why": decision.why,
            "window": None
            if decision.window is None
            else {
                "index": decision.window.index,
                "stack": decision.window.stack,
                "began_at": decision.window.at,
                "began": when(decision.window.at),
            },
            "next_change": None
            if decision.next_change is None
            else {
                "index": decision.next_change.index,
                "stack": decision.next_change.stack,
                "at": decision.next_change.at,
                "when": when(decision.next_change.at),
            },
            "hold": None
            if hold is None
            else {
                "stack": hold.stack,
                "until": hold.until,
                "until_local": when(hold.until),
                "source": hold.source,
            },
            "idle": None
            if down is None
            else {"upper": down.upper, "lower": down.lower, "since": down.at, "depth": down.depth},
            "wakes": self.wakes,
        }


class PendingWake:
    """One call's wait for the shared switch to ``stack`` (``Waking``): bounded by ``limit_s``
    of the event loop's time from its start; ``waited_s`` is read on the driver's clock."""

    def __init__(self, driver: DayDriver, stack: str, task: asyncio.Task[str | None], limit_s: float) -> None:
        self.stack = stack
        self.limit_s = limit_s
        self._driver = driver
        self._task = task
        self._started = driver.clock()
        self._deadline = asyncio.get_running_loop().time() + limit_s

    def left_s(self) -> float:
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def doing(self) -> str:
        running = self._driver.manager.current_switch
        if running is None:
            return f"stack '{self.stack}' is waking"
        if running.target == self.stack:
            return f"stack '{self.stack}' is waking (switch {running.id})"
        return f"stack '{self.stack}' wakes after switch {running.id} to '{running.target}'"

    async def wait(self, at_most_s: float | None = None) -> Woken | None:
        left = self.left_s()
        step = left if at_most_s is None else min(left, at_most_s)
        try:
            switch_id = await asyncio.wait_for(asyncio.shield(self._task), step)
        except TimeoutError:
            if step < left:
                return None
            raise WakeTimedOut(
                f"waited {self.limit_s:g} s for stack '{self.stack}' to wake (its switch goes on); "
                "try again shortly",
                stack=self.stack,
                retry_after_s=10,
            ) from None
        return Woken(self.stack, self._driver.clock() - self._started, switch_id)


class WakeFailed(StackdError):
    """The switch a call woke did not succeed (502: the stack it needs could not start)."""

    status = 502


def _with_why(decision: Decision, why: str) -> Decision:
    return replace(decision, why=why)


def _without_downshift(state: PolicyState) -> PolicyState:
    return replace(state, downshift=None, gave_up=None)


def _state_json(state: PolicyState) -> dict[str, object]:
    return asdict(state)


def _time_of(value: object) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _state_from(data: dict[str, object]) -> PolicyState:
    """The persisted state; a row this version cannot read is dropped (logged), not fatal."""
    try:
        hold = data.get("hold")
        down = data.get("downshift")
        return PolicyState(
            hold=Hold(**hold) if isinstance(hold, dict) else None,
            downshift=Downshift(**down) if isinstance(down, dict) else None,
            seen_window=_time_of(data.get("seen_window")),
            waiting_since=_time_of(data.get("waiting_since")),
            gave_up=gave_up if isinstance(gave_up := data.get("gave_up"), str) else None,
        )
    except TypeError:
        log.warning("day policy: the persisted state could not be read; starting afresh")
        return PolicyState()
