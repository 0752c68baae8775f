"""Leases of on-demand GPU models: the pure decision, and the coordinator that applies it.

A lease says "keep this on-demand model resident until ``expires_at``". ``decide_lease`` is pure
(no I/O, no clock): given the config, the active stack, what runs and the live leases, it returns
the steps that make the model resident (evict the unleased member of its swap group, then start
it) or a refusal that says why not. ``LeaseCoordinator`` holds the leases, runs each decision on
the manager's worker (so a lease never interleaves with a switch or an idle release), and answers
the API.

The VRAM invariant: the planner budgets every swap group at its largest member (a group of its
own for an on-demand model without ``swap_group``), and only accepts a stack whose
``reserve + always-on + Σ largest-per-group`` fits the card. A lease keeps at most one member of
each group resident (it evicts, or refuses while another member holds a live lease), so the
resident set is always within that budget: a lease never over-commits the card.

Leases live in the daemon's memory (a restart forgets them; the idle TTL then applies). A lease on
a model that the active stack no longer has ends: a switch stops such a model regardless, and the
lease is dropped on the next read.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, assert_never

from stackd.config.models import Lifecycle, Model, Placement, StacksConfig
from stackd.errors import Conflict, DriverUnavailable, NotFound, StackdError
from stackd.planner.plan import ObservedState, StartContainer, StopContainer
from stackd.planner.views import redact_url

if TYPE_CHECKING:
    from stackd.manager import ModelStackManager

DEFAULT_TTL_S = 600.0  # a lease on a model without idle_ttl_s


class LeaseRefused(StackdError):
    """The model cannot be leased in this stack (not a member, not on demand, not a GPU container)."""

    status = 422


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


RefusalCode = Literal["unknown_model", "no_active_stack", "not_member", "not_on_demand", "not_gpu", "held"]
LeaseStep = StopContainer | StartContainer


@dataclass(frozen=True)
class LeaseRefusal:
    code: RefusalCode
    message: str
    holders: tuple[Lease, ...] = ()  # for "held": the live leases of the group's other members


@dataclass(frozen=True)
class LeaseDecision:
    """What granting a lease on ``model`` takes: ``steps`` in order, or a ``refusal``.

    ``StartContainer`` is always the last step of a grant (idempotent: for a running container
    it only waits until ready); a ``StopContainer`` before it evicts an unleased member of the
    same swap group."""

    model: str
    steps: tuple[LeaseStep, ...] = ()
    refusal: LeaseRefusal | None = None

    @property
    def evicted(self) -> tuple[str, ...]:
        return tuple(s.model for s in self.steps if isinstance(s, StopContainer))


def swap_group(name: str, model: Model) -> str:
    """The group whose members replace each other on the card (a group of its own without one)."""
    return model.swap_group or name


def leasable(model: Model) -> bool:
    return (
        model.lifecycle == Lifecycle.on_demand
        and model.placement == Placement.gpu
        and model.docker is not None
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
            f"{model} is not a GPU container ({spec.placement.value}, "
            f"{spec.runtime.value}); leases start on-demand GPU docker members",
        )
    return None


def decide_lease(
    config: StacksConfig,
    active_stack: str | None,
    observed: ObservedState,
    leases_held: Iterable[Lease],
    model: str,
) -> LeaseDecision:
    """Decide a lease on ``model``. Pure. ``leases_held`` must be the live leases only."""
    refused = config_refusal(config, active_stack, model)
    if refused is not None:
        return refused
    spec = config.models[model]
    group = swap_group(model, spec)
    # Every resident model of the group counts, member of the active stack or not: it holds VRAM.
    rivals = [
        name
        for name, other in config.models.items()
        if name != model
        and other.docker is not None
        and swap_group(name, other) == group
        and name in observed.running_containers
    ]
    holders = sorted((lease for lease in leases_held if lease.model in rivals), key=lambda le: le.expires_at)
    if holders:
        last = holders[-1]
        message = (
            f"{model} cannot start: {last.model} holds the {group} swap group under lease {last.id} "
            f"until {wall_time(last.expires_at)}; release it (stackd lease release {last.id}) or "
            "try again after it expires"
        )
        return _refused(model, "held", message, tuple(holders))
    steps: list[LeaseStep] = [StopContainer(n, _container(config, n)) for n in rivals]
    steps.append(StartContainer(model, _container(config, model)))
    return LeaseDecision(model, tuple(steps))


def _refused(model: str, code: RefusalCode, message: str, holders: tuple[Lease, ...] = ()) -> LeaseDecision:
    return LeaseDecision(model, refusal=LeaseRefusal(code, message, holders))


def _container(config: StacksConfig, name: str) -> str:
    docker = config.models[name].docker
    assert docker is not None
    return docker.container


def _leasable_names(config: StacksConfig, stack: str | None) -> str:
    if stack not in config.stacks:
        return "none (no active stack)"
    assert stack is not None
    names = [n for n in config.stacks[stack].member_names if leasable(config.models[n])]
    return ", ".join(names) or f"none in '{stack}'"


def wall_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def refusal_error(refusal: LeaseRefusal) -> StackdError:
    """The API's error for a refusal: 404 unknown model, 409 held by a lease, 422 otherwise."""
    match refusal.code:
        case "unknown_model":
            return NotFound(refusal.message)
        case "held":
            return Conflict(refusal.message, holders=[lease_brief(h) for h in refusal.holders])
        case "no_active_stack" | "not_member" | "not_on_demand" | "not_gpu":
            return LeaseRefused(refusal.message, code=refusal.code)
        case _:
            assert_never(refusal.code)


def lease_brief(lease: Lease) -> dict[str, Any]:
    return {"lease_id": lease.id, "model": lease.model, "expires_at": lease.expires_at}


class LeaseCoordinator:
    """The daemon's leases. Build once with the manager; ``clock`` (Unix seconds by default: a
    lease's expiry is shown to people) times expiry; ``new_id`` names leases.

    ``acquire`` is the only method that touches the engines; it runs on the manager's worker.
    """

    def __init__(
        self,
        manager: ModelStackManager,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self.manager = manager
        self.clock = clock
        self._new_id = new_id
        self._leases: dict[str, Lease] = {}

    def default_ttl_s(self, model: str) -> float:
        spec = self.manager.config.models.get(model)
        return float(spec.idle_ttl_s) if spec is not None and spec.idle_ttl_s else DEFAULT_TTL_S

    async def acquire(self, model: str, ttl_s: float | None = None) -> Lease:
        """Make ``model`` resident and ready, and lease it for ``ttl_s`` (default: its idle TTL).

        Raises ``NotFound`` (unknown model), ``Conflict`` (a switch runs, or another member of its
        swap group holds a live lease: the message names the lease and its expiry),
        ``LeaseRefused`` (not leasable in the active stack), or the driver's error when the
        container does not start. Another lease on the same model shares the resident container.
        What the config alone refuses is refused before Docker is asked: an unknown model (404)
        at once, a model the active stack cannot lease once no switch is in the way."""
        if model not in self.manager.config.models:
            self._refuse_by_config(model)
        self._refuse_during_switch(model)

        async def grant() -> Lease:
            self._refuse_during_switch(model)  # a switch reserved while this job waited in the queue
            self._refuse_by_config(model)  # the config and the active stack of now
            observation = await self.manager.observe_detailed()
            if "docker" in observation.problems:
                raise DriverUnavailable(observation.problems["docker"])
            config = self.manager.config
            decision = decide_lease(config, self.manager.active_stack, observation.state, self.live(), model)
            if decision.refusal is not None:
                raise refusal_error(decision.refusal)
            await self._apply(decision.steps, config)
            now = self.clock()
            ttl = ttl_s if ttl_s is not None else self.default_ttl_s(model)
            lease = Lease(self._new_id(), model, acquired_at=now, expires_at=now + ttl, ttl_s=ttl)
            self._leases[lease.id] = lease
            self.manager.touch(model)
            return lease

        return await self.manager.run_exclusive(grant)

    async def _apply(self, steps: Sequence[StopContainer | StartContainer], config: StacksConfig) -> None:
        """Run the eviction and the start; if a step fails, put back what was evicted (and stop
        what half-started) so a refused lease leaves the card as it found it, then re-raise."""
        containers = self.manager.containers
        done: list[StopContainer | StartContainer] = []
        try:
            for step in steps:
                match step:
                    case StopContainer():
                        await containers.ensure_stopped(step.model, config.models[step.model])
                    case StartContainer():
                        done.append(step)  # a failed start may leave a container running
                        await containers.ensure_running(step.model, config.models[step.model])
                        continue
                    case _:
                        assert_never(step)
                done.append(step)
        except Exception:
            for step in reversed(done):
                with contextlib.suppress(StackdError):  # best effort; drift shows in /status
                    if isinstance(step, StartContainer):
                        await containers.ensure_stopped(step.model, config.models[step.model])
                    else:
                        await containers.ensure_running(step.model, config.models[step.model])
            raise

    def _refuse_by_config(self, model: str) -> None:
        decision = config_refusal(self.manager.config, self.manager.active_stack, model)
        if decision is not None and decision.refusal is not None:
            raise refusal_error(decision.refusal)

    def renew(self, lease_id: str, ttl_s: float | None = None) -> Lease:
        """Extend a live lease to ``now + ttl_s`` (default: its own TTL). ``NotFound`` once it ended."""
        lease = self._get(lease_id)
        ttl = ttl_s if ttl_s is not None else lease.ttl_s
        renewed = replace(lease, expires_at=self.clock() + ttl, ttl_s=ttl)
        self._leases[lease_id] = renewed
        self.manager.touch(lease.model)
        return renewed

    def release(self, lease_id: str) -> Lease:
        """End a lease. The model keeps running; its idle TTL counts from now."""
        lease = self._get(lease_id)
        del self._leases[lease_id]
        self.manager.touch(lease.model)
        return lease

    def live(self) -> list[Lease]:
        """The live leases, oldest first. Drops those expired or on models the active stack lacks."""
        now, config, active = self.clock(), self.manager.config, self.manager.active_stack
        stack = config.stacks.get(active or "")
        members = set(stack.member_names) if stack is not None else set()
        for lease in list(self._leases.values()):
            if not lease.live(now) or lease.model not in members:
                del self._leases[lease.id]
        return sorted(self._leases.values(), key=lambda le: le.acquired_at)

    def holds(self, model: str) -> bool:
        """Whether a live lease keeps ``model`` resident (the idle job asks before stopping it)."""
        return any(lease.model == model for lease in self.live())

    def to_json(self, lease: Lease) -> dict[str, Any]:
        spec = self.manager.config.models.get(lease.model)
        return {
            "id": lease.id,
            "model": lease.model,
            "acquired_at": lease.acquired_at,
            "expires_at": lease.expires_at,
            "expires_in_s": round(max(lease.expires_at - self.clock(), 0.0), 3),
            "ttl_s": lease.ttl_s,
            "endpoint": redact_url(spec.endpoint) if spec is not None else None,
        }

    def _get(self, lease_id: str) -> Lease:
        live = {lease.id: lease for lease in self.live()}
        if lease_id not in live:
            raise NotFound(
                f"no live lease '{lease_id}' (it expired, was released, or its model left the active stack)"
            )
        return live[lease_id]

    def _refuse_during_switch(self, model: str) -> None:
        current = self.manager.current_switch
        if current is not None:
            raise Conflict(
                f"switch {current.id} to '{current.target}' is in progress; lease {model} after it ends",
                switch_id=current.id,
                stack=current.target,
            )
