"""``ModelStackManager``: the owner of the running stack.

It observes the engines, asks the pure planner for a plan, and applies plans one at a time: a
single worker task takes jobs (switches, recovery, idle releases) from a queue, so no two
mutations of the engines ever interleave and nothing in here needs a lock (STYLE habit 5).
``submit_switch`` reserves the one switch slot *before* its first ``await``; a second call while
the slot is held gets ``Conflict`` naming the switch in progress.

A switch journals its intent before the first step, records each done step, and commits (the
active stack persisted in the same transaction) after the last; on failure the executor undoes
what was done and the journal says ``rolled_back`` (or ``failed`` when an undo failed too).
Writes to the store go through ``asyncio.to_thread``: each waits on an fsync. Reads (a switch by
id) run on the event loop: the store reads on a connection of its own, which never waits for a
writer (WAL), so a read takes microseconds even while a switch journals a step.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from stackd.config.models import StacksConfig
from stackd.drivers.base import ContainerDriver, HealthChecker, OllamaDriver, ProcessDriver, RemoteProber
from stackd.errors import Conflict, NotFound, PlanRefused
from stackd.hardware.types import HardwareSnapshot
from stackd.manager.events import EventLog, SwitchEvent
from stackd.manager.executor import Execution, PlanExecutor
from stackd.manager.observe import Observation, observe_engines, with_measurements
from stackd.manager.recovery import RecoveryReport
from stackd.manager.switch import Switch, SwitchHandle, SwitchKind, journal_dict, replay_finished
from stackd.planner import plan_switch
from stackd.planner.plan import ObservedState, Plan
from stackd.planner.views import plan_json
from stackd.roles import LiveRoles
from stackd.state.store import StateStore

log = logging.getLogger("stackd.manager")

Planner = Callable[[StacksConfig, ObservedState, str, HardwareSnapshot], Plan]
Job = Callable[[], Awaitable[Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    at: float  # wall clock
    error: str | None = None


@dataclass(frozen=True)
class JobResult:
    ok: bool
    at: float  # wall clock
    summary: str


class ManagerCore:
    """Observation, planning, the switch slot and the worker. ``ModelStackManager`` adds the
    switch lifecycle, recovery and status on top (``stackd.manager.model_stack_manager``).

    ``clock`` (monotonic) times idle TTLs and probe intervals; ``wall_clock`` stamps what is
    shown and persisted. ``repair_on_start``: at a start with no interrupted switch, re-apply
    the persisted stack (an idempotent switch that restarts dead members and binds the role
    table); when False, only bind the roles of members found up and report the rest as drift.
    ``drain_s``: seconds between a role swap and the first stop or unload of a backend it
    replaced, so that a request that looked up the old binding just before still finishes on it
    (the daemon sets it; 0 suits in-memory tests). ``footprints``: the remembered measured
    sizes of the config's members (``stackd.state.gpu``), budgeted when larger than declared.
    """

    def __init__(
        self,
        config: StacksConfig,
        store: StateStore,
        containers: ContainerDriver,
        processes: ProcessDriver,
        ollama: OllamaDriver,
        remotes: RemoteProber,
        health: HealthChecker,
        live_roles: LiveRoles,
        read_hardware: Callable[[], HardwareSnapshot],
        planner: Planner = plan_switch,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        step_timeout_s: float = 300.0,
        keep_switches: int = 50,
        repair_on_start: bool = True,
        drain_s: float = 0.0,
        footprints: Callable[[StacksConfig], Mapping[str, int]] | None = None,
    ) -> None:
        self.config = config
        # model -> the largest MiB it was measured to hold under its current config (state store)
        self.footprints: Callable[[StacksConfig], Mapping[str, int]] = footprints or (lambda config: {})
        # Told the name of each member a switch started, once ready (the daemon measures its footprint).
        self.on_started: Callable[[str], None] = lambda model: None
        self.store = store
        self.containers = containers
        self.processes = processes
        self.ollama = ollama
        self.remotes = remotes
        self.health = health
        self.live_roles = live_roles
        self.clock = clock
        self.wall_clock = wall_clock
        self._read_hardware = read_hardware
        self._planner = planner
        self._step_timeout_s = step_timeout_s
        self._drain_s = drain_s
        self._keep_switches = keep_switches
        self._active: str | None = store.active_stack()
        self._switches: dict[str, Switch] = {}
        self._current: Switch | None = None
        self._last_switch: Switch | None = None
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any] | None]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.repair_on_start = repair_on_start
        self._recovery: RecoveryReport | None = None
        self._last_use: dict[str, float] = {}
        self.probes: dict[str, ProbeResult] = {}
        self._started_at: dict[str, float] = {}  # model -> wall time a switch last started its engine
        self.jobs: dict[str, JobResult] = {}
        self.degraded: dict[str, str] = {}

    # ---------------------------------------------------------------- reading

    @property
    def active_stack(self) -> str | None:
        """The committed stack (persisted), not the one a running switch is heading to."""
        return self._active

    @property
    def current_switch(self) -> Switch | None:
        return self._current

    async def observe_detailed(self) -> Observation:
        return await observe_engines(
            self.config,
            self.containers,
            self.ollama,
            self.live_roles.current.bindings,
            self._active,
            self.processes,
        )

    async def observe(self) -> ObservedState:
        """What runs now. An engine that does not answer contributes nothing (see ``observe_detailed``)."""
        return (await self.observe_detailed()).state

    async def read_hardware(self) -> HardwareSnapshot:
        return await asyncio.to_thread(self._read_hardware)

    async def plan(self, target: str) -> Plan:
        self.known(target)
        observation, hardware = await asyncio.gather(self.observe_detailed(), self.read_hardware())
        observed = with_measurements(observation, self.config, hardware, self.footprints(self.config)).state
        return self._planner(self.config, observed, target, hardware)

    def plan_from(self, observed: ObservedState, target: str, hardware: HardwareSnapshot) -> Plan:
        return self._planner(self.config, observed, target, hardware)

    def known(self, stack: str) -> None:
        if stack not in self.config.stacks:
            raise NotFound(
                f"unknown stack '{stack}'; valid stacks: {', '.join(self.config.stacks)}",
                valid=list(self.config.stacks),
            )

    def get_switch(self, switch_id: str) -> dict[str, Any]:
        """A switch of this run (live state) or of an earlier one (from the journal)."""
        switch = self._switches.get(switch_id)
        if switch is not None:
            return switch.to_dict()
        entry = self.store.get_switch(switch_id)  # the store's reader: microseconds, never waits on a write
        if entry is None:
            raise NotFound(f"no switch with id '{switch_id}'")
        return journal_dict(entry)

    def events(self, switch_id: str) -> AsyncIterator[SwitchEvent]:
        """Async iterator of the switch's events: every past one, then live ones until it ends.

        Raises ``NotFound`` here, before iteration, so that the API can answer 404 instead of
        opening a stream."""
        switch = self._switches.get(switch_id)
        if switch is not None:
            return switch.log.follow()
        entry = self.store.get_switch(switch_id)
        if entry is None:
            raise NotFound(f"no switch with id '{switch_id}'")
        return replay_finished(entry)

    def recent_switches(self, limit: int = 10) -> list[dict[str, Any]]:
        """Up to ``limit`` switches, newest first: this run's (live, with their events), then
        the journal's of earlier runs (their steps done, no events: those were not persisted)."""
        recent = [s.to_dict() for s in reversed(self._switches.values())][:limit]
        seen = {s["switch_id"] for s in recent}
        for entry in self.store.history(limit):  # the store's reader: microseconds
            if len(recent) >= limit:
                break
            journal = self.store.get_switch(entry.switch_id) if entry.switch_id not in seen else None
            if journal is not None:
                recent.append(journal_dict(journal))
        return recent

    # ---------------------------------------------------------------- the switch slot and the worker

    def _reserve(
        self, target: str, from_stack: str | None, switch_id: str | None = None, kind: SwitchKind = "switch"
    ) -> Switch:
        """Take the one switch slot, or raise ``Conflict`` naming its holder. Never awaits."""
        current = self._current
        if current is not None:
            raise Conflict(
                f"switch {current.id} to '{current.target}' is in progress; follow it at "
                f"/model-stacks/switch/{current.id} and try again when it has finished",
                switch_id=current.id,
                stack=current.target,
            )
        switch_id = switch_id or uuid.uuid4().hex[:12]
        switch = Switch(
            id=switch_id,
            target=target,
            from_stack=from_stack,
            log=EventLog(switch_id, self.wall_clock),
            kind=kind,
            started_at=self.wall_clock(),
        )
        self._current = switch
        return switch

    def _release(self, switch: Switch) -> None:
        if self._current is switch:
            self._current = None
        self._last_switch = switch

    def _remember(self, switch: Switch) -> None:
        self._switches[switch.id] = switch
        while len(self._switches) > self._keep_switches:
            oldest = next(iter(self._switches))
            if self._switches[oldest].in_progress:
                break
            del self._switches[oldest]

    def _refuse(self, plan: Plan) -> PlanRefused:
        reasons = "; ".join(r.message for r in plan.refusals) or "the planner found it infeasible"
        return PlanRefused(f"stack '{plan.stack}' cannot be applied: {reasons}", plan=plan_json(plan))

    def _enqueue(self, job: Job, done: asyncio.Future[Any] | None = None) -> None:
        if self._worker is None or self._worker.done() or self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._work(self._queue), name="stackd-switch-worker")
        self._queue.put_nowait((job, done))

    async def replace_config(self, config: StacksConfig) -> None:
        """Adopt a validated config between switches. Refuses (Conflict) while a switch runs and
        (NotFound) when the new file drops the active stack; members change at the next switch."""
        switch = self.current_switch
        if switch is not None and switch.in_progress:
            raise Conflict(f"switch {switch.id} to '{switch.target}' is in progress; reload after it ends")
        active = self.active_stack
        if active is not None and active not in config.stacks:
            raise NotFound(f"the new config drops the active stack '{active}'; switch to another stack first")

        async def adopt() -> None:
            self.config = config

        await self.run_exclusive(adopt)

    async def run_exclusive(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``job`` on the worker, after whatever is queued before it, and return its result."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(job, done)
        return await done

    async def _work(self, queue: asyncio.Queue[tuple[Job, asyncio.Future[Any] | None]]) -> None:
        while True:
            job, done = await queue.get()
            try:
                result = await job()
            except Exception as exc:
                if done is None:
                    log.exception("switch worker job failed")
                elif not done.done():
                    done.set_exception(exc)
            except BaseException:
                if done is not None and not done.done():
                    done.cancel()
                raise
            else:
                if done is not None and not done.done():
                    done.set_result(result)

    async def aclose(self) -> None:
        """Stop the worker. A switch in flight is cut short; its journal entry stays open and the
        next start recovers it."""
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
        if worker is not None:
            await asyncio.gather(worker, return_exceptions=True)

    # ---------------------------------------------------------------- applying

    async def _execute(self, switch: Switch, plan: Plan, journal_id: str) -> Execution:
        switch.plan = plan
        switch.execution = Execution()

        async def journal(step: Mapping[str, Any]) -> None:
            await asyncio.to_thread(self.store.record_step, journal_id, dict(step))

        executor = PlanExecutor(
            self.config,
            self.containers,
            self.processes,
            self.ollama,
            self.remotes,
            self.live_roles,
            switch.log,
            journal,
            self._step_timeout_s,
            self._drain_s,
        )
        return await executor.run(plan, switch.execution)


__all__ = ["JobResult", "ManagerCore", "Planner", "ProbeResult", "SwitchHandle"]
