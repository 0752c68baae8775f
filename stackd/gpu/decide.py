"""The pure decision of a lease: what granting it takes, or why it must wait or is refused.

``decide_lease`` has no I/O and no clock (``now`` is passed in). Given the config, the active
stack, what runs, the live leases and the card (``GpuRoom``), it returns the steps that make the
model resident, in order (stop the rivals of its swap group, then the cheapest set of idle
members that makes it fit, then start it), or a ``LeaseRefusal``: one to wait on (``held``: a
lease holds what it needs; ``no_room``: foreign processes do) or one that is final (the config
refuses it, or the card can never hold it).

The budget it keeps: ``max(reserve, foreign) + Σ always-on members of the active stack + Σ
every other GPU member that is up or leased + the model ≤ total``, each member at its budget
(declared, or measured when larger: ``stackd.planner.footprints``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from stackd.config.models import Lifecycle, Model, Placement, StacksConfig
from stackd.gpu.eviction import Candidate, cheapest_eviction
from stackd.hardware.types import GpuProcess, HardwareSnapshot
from stackd.planner.footprints import budget_mib
from stackd.planner.members import MIB_PER_GIB, gib, is_gpu, is_up
from stackd.planner.plan import ObservedState, StartContainer, StartProcess, StopContainer, StopProcess

RefusalCode = Literal[
    "unknown_model",
    "no_active_stack",
    "not_member",
    "not_on_demand",
    "not_gpu",
    "too_large",
    "held",
    "no_room",
]
WAIT_CODES = frozenset({"held", "no_room"})
LeaseStep = StopContainer | StartContainer | StopProcess | StartProcess


@dataclass(frozen=True)
class Lease:
    """``model`` stays resident until ``expires_at`` (seconds on the coordinator's clock)."""

    id: str
    model: str
    acquired_at: float
    expires_at: float
    ttl_s: float

    def live(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class GpuRoom:
    """The card a lease must fit on, in MiB: ``reserve`` as configured, ``foreign`` what other
    processes hold (NVML's used memory minus stackd's members that are up, at their budget)."""

    total_mib: int
    reserve_mib: int
    foreign_mib: int = 0
    device: int = 0
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True)
class LeaseRefusal:
    code: RefusalCode
    message: str
    holders: tuple[Lease, ...] = ()  # the live leases whose end would make room
    retry_after_s: float | None = None

    @property
    def waits(self) -> bool:
        """Whether waiting can help (a lease or a foreign process holds what it needs)."""
        return self.code in WAIT_CODES


@dataclass(frozen=True)
class LeaseDecision:
    """What granting a lease on ``model`` takes: ``steps`` in order, or a ``refusal``.

    The start is always the last step of a grant (idempotent: for a running member it only
    waits until ready); the stops before it evict rivals of its swap group and idle members."""

    model: str
    steps: tuple[LeaseStep, ...] = ()
    refusal: LeaseRefusal | None = None

    @property
    def evicted(self) -> tuple[str, ...]:
        return tuple(s.model for s in self.steps if isinstance(s, StopContainer | StopProcess))


def swap_group(name: str, model: Model) -> str:
    """The group whose members replace each other on the card (a group of its own without one)."""
    return model.swap_group or name


def leasable(model: Model) -> bool:
    return (
        model.lifecycle == Lifecycle.on_demand
        and model.placement == Placement.gpu
        and (model.docker is not None or model.process is not None)
    )


def gpu_room(config: StacksConfig, observed: ObservedState, hardware: HardwareSnapshot) -> GpuRoom | None:
    """The card of ``config.gpu.device`` as the ledger sees it; None when no size is known."""
    device = hardware.gpu(config.gpu.device)
    if config.gpu.total_gb is not None:
        total = round(config.gpu.total_gb * MIB_PER_GIB)
    elif device is not None:
        total = device.total_mib
    else:
        return None
    up = sum(
        budget_mib(n, m, observed) for n, m in config.models.items() if is_gpu(m) and is_up(n, m, observed)
    )
    return GpuRoom(
        total_mib=total,
        reserve_mib=round(config.gpu.reserve_gb * MIB_PER_GIB),
        foreign_mib=max((device.used_mib if device else 0) - up, 0),
        device=config.gpu.device,
        processes=device.processes if device and not up else (),  # with members up NVML mixes them in
    )


def config_refusal(config: StacksConfig, active_stack: str | None, model: str) -> LeaseDecision | None:
    """The refusal that the config alone decides (an unknown model, one not leasable in the
    active stack), or None. Pure, and needs no observation: asked before Docker is."""
    spec = config.models.get(model)
    if spec is None:
        return _refused(
            model,
            "unknown_model",
            f"unknown model '{model}'; models you can lease: {_leasable_names(config, active_stack)}",
        )
    if active_stack not in config.stacks:
        return _refused(model, "no_active_stack", "no stack is active; switch to a stack first")
    assert active_stack is not None
    if model not in config.stacks[active_stack].member_names:
        return _refused(
            model,
            "not_member",
            f"{model} is not a member of the active stack '{active_stack}'; "
            f"models you can lease: {_leasable_names(config, active_stack)}",
        )
    if spec.lifecycle != Lifecycle.on_demand:
        return _refused(
            model,
            "not_on_demand",
            f"{model} is {spec.lifecycle.value}: the stack keeps it running; leases are for on_demand models",
        )
    if not leasable(spec):
        return _refused(
            model,
            "not_gpu",
            f"{model} is not a GPU container or process ({spec.placement.value}, "
            f"{spec.runtime.value}); leases start on-demand GPU docker and process members",
        )
    return None


def decide_lease(
    config: StacksConfig,
    active_stack: str | None,
    observed: ObservedState,
    leases_held: Iterable[Lease],
    model: str,
    room: GpuRoom | None = None,
    last_used: Mapping[str, float] | None = None,
    now: float | None = None,
) -> LeaseDecision:
    """Decide a lease on ``model``. Pure. ``leases_held`` must be the live leases only; without a
    ``room`` (no card size known) only the swap groups constrain."""
    refused = config_refusal(config, active_stack, model)
    if refused is not None:
        return refused
    assert active_stack is not None
    leases = list(leases_held)
    leased = {lease.model for lease in leases}
    spec = config.models[model]
    group = swap_group(model, spec)
    up = {n for n, m in config.models.items() if is_gpu(m) and is_up(n, m, observed)}
    # Every resident model of the group counts, member of the active stack or not: it holds VRAM.
    rivals = sorted(n for n in up if n != model and swap_group(n, config.models[n]) == group)
    held = _held_by_rival(model, group, rivals, leases, now)
    if held is not None:
        return held
    start = _start_step(model, spec)
    if model in up or room is None:
        return LeaseDecision(model, (*(_stop_step(n, config.models[n]) for n in rivals), start))

    def budget(name: str) -> int:
        return budget_mib(name, config.models[name], observed)

    always = _always_on_gpu(config, active_stack)
    # A leased member holds its room even while it restarts: the lease promised it residency.
    others = (set(always) | up | (leased & set(config.models))) - {model, *rivals}
    held_back = max(room.reserve_mib, room.foreign_mib)
    free = room.total_mib - held_back - sum(budget(n) for n in others)
    need = budget(model)
    candidates = _eviction_candidates(config, others & up, leased, budget, last_used)
    chosen = cheapest_eviction(candidates, need - free)
    if chosen is not None:
        stops = [_stop_step(n, config.models[n]) for n in [*rivals, *(c.model for c in chosen)]]
        return LeaseDecision(model, (*stops, start))
    return _no_fit(config, model, need, free, room, candidates, leases, others, budget, always, now)


def _held_by_rival(
    model: str, group: str, rivals: list[str], leases: list[Lease], now: float | None
) -> LeaseDecision | None:
    """The wait when a live lease holds a rival of ``model``'s swap group (the latest to end is named)."""
    held = sorted((le for le in leases if le.model in rivals), key=lambda le: le.expires_at)
    if not held:
        return None
    last = held[-1]
    message = (
        f"{model} cannot start: {last.model} holds the {group} swap group under lease {last.id} "
        f"until {wall_time(last.expires_at)}; release it (stackd lease "
        f"release {last.id}) or wait for it to end"
    )
    return _refused(model, "held", message, tuple(held), _retry_after(held, now))


def _always_on_gpu(config: StacksConfig, stack: str) -> list[str]:
    """The always-on GPU members of ``stack``: they keep their room whatever is leased."""
    return [
        n
        for n in config.stacks[stack].member_names
        if is_gpu(config.models[n]) and config.models[n].lifecycle == Lifecycle.always_on
    ]


def _eviction_candidates(
    config: StacksConfig,
    resident: set[str],
    leased: set[str],
    budget: Callable[[str], int],
    last_used: Mapping[str, float] | None,
) -> list[Candidate]:
    """The resident members a lease may stop to make room: on demand, stoppable, not leased."""
    return [
        Candidate(n, budget(n), (last_used or {}).get(n))
        for n in sorted(resident)
        if n not in leased
        and config.models[n].lifecycle == Lifecycle.on_demand
        and _stoppable(config.models[n])
    ]


def _no_fit(
    config: StacksConfig,
    model: str,
    need: int,
    free: int,
    room: GpuRoom,
    candidates: list[Candidate],
    leases: list[Lease],
    others: set[str],
    budget: Callable[[str], int],
    always: list[str],
    now: float | None,
) -> LeaseDecision:
    """Why ``model`` does not fit even after every idle member goes: leases (wait for the fewest
    whose end makes room, soonest first), foreign processes (wait), or the card (refuse)."""
    freed = free + sum(c.mib for c in candidates)
    ends: dict[str, float] = {}
    for lease in leases:
        if lease.model in others and config.models[lease.model].lifecycle == Lifecycle.on_demand:
            ends[lease.model] = max(ends.get(lease.model, 0.0), lease.expires_at)
    holders: list[Lease] = []
    for name in sorted(ends, key=lambda n: ends[n]):
        if freed >= need:
            break
        freed += budget(name)
        holders += sorted((le for le in leases if le.model == name), key=lambda le: le.expires_at)
    device = f"GPU {room.device}"
    if freed >= need and holders:
        waiting = ", ".join(f"lease {le.id} on {le.model} until {wall_time(le.expires_at)}" for le in holders)
        message = (
            f"{model} needs {gib(need)} but {device} has {gib(max(free, 0))} free and leased members hold "
            f"the rest: {waiting}; release a lease (stackd lease release ID) or wait for it to end"
        )
        return _refused(model, "held", message, tuple(holders), _retry_after(holders, now))
    foreign_excess = room.foreign_mib - room.reserve_mib
    if foreign_excess > 0 and freed + foreign_excess >= need:
        names = ", ".join(f"{p.name} {gib(p.used_mib)}" for p in room.processes[:3]) or "not stackd's"
        message = (
            f"{model} needs {gib(need)} but other processes hold {gib(room.foreign_mib)} of {device} "
            f"({names}); waiting for them to free memory"
        )
        return _refused(model, "no_room", message)
    always_mib = sum(budget(n) for n in always)
    message = (
        f"{model} needs {gib(need)} of VRAM but {device} can never hold it: {gib(room.total_mib)} total, "
        f"{gib(max(room.reserve_mib, room.foreign_mib))} reserve, {gib(always_mib)} always-on "
        f"({', '.join(always) or 'none'}); lower its memory_gb, make an always-on member on_demand "
        "or lower gpu.reserve_gb"
    )
    return _refused(model, "too_large", message)


def waiting_reason(refusal: LeaseRefusal, now: float) -> str:
    """The sentence ``GET /leases`` (and a 503 at the deadline) shows for a waiter: 'waiting for
    lease L on comfyui-flux, expires in 212 s', or the refusal's message when no lease is in the way.
    Decisions say when in wall time; this says how long from ``now``."""
    if refusal.holders:
        return "; ".join(
            f"waiting for lease {le.id} on {le.model}, expires in {max(le.expires_at - now, 0.0):.0f} s"
            for le in refusal.holders
        )
    return refusal.message


def retry_after(refusal: LeaseRefusal, now: float) -> float | None:
    """Seconds from ``now`` until the first lease in the way ends (at least 1), if one is."""
    return _retry_after(list(refusal.holders), now) if refusal.holders else refusal.retry_after_s


def _retry_after(holders: list[Lease], now: float | None) -> float | None:
    if now is None or not holders:
        return None
    return max(min(le.expires_at for le in holders) - now, 1.0)


def _stoppable(model: Model) -> bool:
    return model.docker is not None or model.process is not None


def _start_step(name: str, model: Model) -> StartContainer | StartProcess:
    if model.docker is not None:
        return StartContainer(name, model.docker.container)
    return StartProcess(name)


def _stop_step(name: str, model: Model) -> StopContainer | StopProcess:
    if model.docker is not None:
        return StopContainer(name, model.docker.container)
    return StopProcess(name)


def _refused(
    model: str,
    code: RefusalCode,
    message: str,
    holders: tuple[Lease, ...] = (),
    retry_after_s: float | None = None,
) -> LeaseDecision:
    return LeaseDecision(model, refusal=LeaseRefusal(code, message, holders, retry_after_s))


def _leasable_names(config: StacksConfig, stack: str | None) -> str:
    if stack not in config.stacks:
        return "none (no active stack)"
    assert stack is not None
    names = [n for n in config.stacks[stack].member_names if leasable(config.models[n])]
    return ", ".join(names) or f"none in '{stack}'"


def wall_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
