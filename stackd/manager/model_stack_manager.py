"""``ModelStackManager``: the owner of the running stack, composed of its parts (it inherits nothing).

``SwitchWorker`` (``worker``: the one task that runs switches, recovery, leases' grants, reloads
and idle releases; the switch slot; the switches kept), ``PlanExecutor`` (``executor``: a plan's
steps and their undo), ``run_journalled`` (``journalled``), ``StartupRecovery`` (``startup``),
``MemberHealth`` (``probes``) and the status view (``status``, over a ``StatusSnapshot``).
A switch is planned on the worker from an observation taken there, so that no job queued before
it (a lease's start, a reload) goes unseen by its plan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from stackd.config.live import LiveConfig, live
from stackd.config.models import StacksConfig
from stackd.errors import Conflict, NotFound, PlanRefused
from stackd.hardware.types import HardwareSnapshot
from stackd.manager.events import EventLog, SwitchEvent
from stackd.manager.execution import Execution
from stackd.manager.executor import PlanExecutor
from stackd.manager.journalled import run_journalled
from stackd.manager.member_engines import refuse_release, refuse_restart, restart_engine, stop_engine
from stackd.manager.observe import Observation, observe_engines, with_measurements
from stackd.manager.probes import JobResult, MemberHealth, ProbeResult, Verdict
from stackd.manager.recovery import RecoveryReport
from stackd.manager.seams import Drivers, ManagerOptions, Planner
from stackd.manager.startup import StartupRecovery
from stackd.manager.status import StatusSnapshot, active_ledger, build_status, log_tail_wanted, snapshot_of
from stackd.manager.switch import Switch, SwitchHandle
from stackd.manager.worker import SwitchWorker
from stackd.planner.plan import ObservedState, Plan, StartContainer, StartProcess, Step
from stackd.planner.views import JsonObject, SwitchAnswer, plan_json
from stackd.roles import LiveRoles
from stackd.state.store import StateStore

log = logging.getLogger("stackd.manager")

__all__ = ["ModelStackManager", "Planner"]

T = TypeVar("T")


class ModelStackManager:
    """Applies stacks through the drivers. Build once in the app factory; call ``recover`` at start.

    Everything it uses is given here (``ManagerOptions`` says how it is tuned); nothing is
    assigned onto it afterwards. The rest of the daemon asks of it through ``Effects``.
    """

    def __init__(
        self,
        config: StacksConfig | LiveConfig,
        store: StateStore,
        drivers: Drivers,
        live_roles: LiveRoles,
        read_hardware: Callable[[], HardwareSnapshot],
        options: ManagerOptions | None = None,
    ) -> None:
        options = options if options is not None else ManagerOptions()
        self.live_config = live(config)  # the daemon's one: the router and the API read it too
        self.options = options
        self.store = store
        self.drivers = drivers
        self.containers = drivers.containers
        self.processes = drivers.processes
        self.ollama = drivers.ollama
        self.remotes = drivers.remotes
        self.health = drivers.health
        self.live_roles = live_roles
        self.clock = options.clock
        self.wall_clock = options.wall_clock
        self.repair_on_start = options.repair_on_start
        self._read_hardware = read_hardware
        self._planner = options.planner
        self._active: str | None = store.active_stack()
        self._recovery: RecoveryReport | None = None
        # The one executor: a switch's plan and a lease's steps run through it.
        self.executor = PlanExecutor(drivers, live_roles, options.step_timeout_s, options.drain_s)
        self.worker = SwitchWorker(store, options.wall_clock, options.keep_switches)
        self.members = MemberHealth(options.clock, options.wall_clock)
        self._startup = StartupRecovery(self)

    @property
    def config(self) -> StacksConfig:
        """The config the manager runs now (``live_config.current``)."""
        return self.live_config.current

    def footprints(self, config: StacksConfig) -> Mapping[str, int]:
        """The remembered measured sizes of ``config``'s members (``ManagerOptions.footprints``)."""
        return self.options.footprints(config)

    # ---------------------------------------------------------------- reading

    @property
    def active_stack(self) -> str | None:
        """The committed stack (persisted), not the one a running switch is heading to."""
        return self._active

    def set_active(self, stack: str | None) -> None:
        self._active = stack

    @property
    def current_switch(self) -> Switch | None:
        return self.worker.current

    @property
    def last_switch(self) -> Switch | None:
        return self.worker.last

    @property
    def recovery(self) -> RecoveryReport | None:
        return self._recovery

    @property
    def probes(self) -> dict[str, ProbeResult]:
        return self.members.probes

    @property
    def degraded(self) -> dict[str, str]:
        return self.members.degraded

    @property
    def jobs(self) -> dict[str, JobResult]:
        return self.members.jobs

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

    def get_switch(self, switch_id: str) -> SwitchAnswer:
        """A switch of this run (live state) or of an earlier one (from the journal)."""
        return self.worker.get_switch(switch_id)

    def events(self, switch_id: str) -> AsyncIterator[SwitchEvent]:
        """Every past event of the switch, then live ones until it ends (``NotFound`` at once)."""
        return self.worker.events(switch_id)

    def recent_switches(self, limit: int = 10) -> list[JsonObject]:
        """Up to ``limit`` switches, newest first: this run's, then the journal's of earlier runs."""
        return self.worker.recent(limit)

    def last_switch_summary(self) -> JsonObject | None:
        """The last switch of this run, or else the newest of the history (an earlier run)."""
        return self.worker.last_summary()

    # ---------------------------------------------------------------- the worker

    async def run_exclusive(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``job`` on the worker, after whatever is queued before it, and return its result."""
        return await self.worker.run_exclusive(job)

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
            self.live_config.swap(config)  # once, here: the router follows in the same step

        await self.run_exclusive(adopt)

    async def aclose(self) -> None:
        """Stop the worker. A switch in flight is cut short; its journal entry stays open and the
        next start recovers it."""
        await self.worker.aclose()

    # ---------------------------------------------------------------- switching

    async def submit_switch(self, target: str, dry_run: bool = False) -> SwitchHandle:
        """Plan a switch to ``target`` on the worker and run it there; returns once it is planned.

        ``NotFound`` for an unknown stack, ``Conflict`` while another switch runs, ``PlanRefused``
        (carrying the plan) when it does not fit: in those cases nothing changes. A dry run only
        plans (on the caller's task: it changes nothing): it holds no slot and its handle is
        already finished.
        """
        self.known(target)
        if dry_run:
            plan = await self.plan(target)
            return SwitchHandle(id="dry-run", target=target, plan=plan, dry_run=True)
        switch = self.worker.reserve(target, self._active)
        planned: asyncio.Future[Plan] = asyncio.get_running_loop().create_future()
        try:
            self.worker.enqueue(lambda: self._plan_and_run(switch, planned))
            plan = await planned
        except BaseException:
            if planned.cancelled() or not planned.done():
                planned.cancel()  # the job, when it gets to it, then applies nothing
                self.worker.release(switch)
            raise  # a refusal or a failed plan: the job has left the slot already
        return SwitchHandle(id=switch.id, target=target, plan=plan, dry_run=False, _switch=switch)

    async def _plan_and_run(self, switch: Switch, planned: asyncio.Future[Plan]) -> None:
        """On the worker: plan from what runs now, tell the caller the plan (or why not), apply it.
        ``planned`` done before this job sets it means the caller gave up and left the slot."""
        if planned.done():
            return
        try:
            plan = await self.plan(switch.target)
            if not plan.feasible:
                raise self.refuse(plan)
        except Exception as exc:
            if not planned.done():
                self.worker.release(switch)
                planned.set_exception(exc)
            return
        except BaseException:
            if not planned.done():
                self.worker.release(switch)
                planned.cancel()
            raise
        if planned.done():
            return
        switch.plan = plan
        self.worker.remember(switch)
        planned.set_result(plan)
        await self._run_switch(switch, plan)

    async def _run_switch(self, switch: Switch, plan: Plan) -> None:
        def succeeded(execution: Execution) -> None:
            self._active = switch.target
            self.members.degraded = dict(execution.degraded)
            self.record_probes(execution)

        try:
            execute = functools.partial(self.execute, switch, plan, switch.id)
            await run_journalled(self.store, switch, plan, execute, succeeded, self.wall_clock)
            execution = switch.execution
            if execution is not None and not execution.ok:
                # What the rollback's words say is what status shows: the probes it just made.
                for name, why in (execution.standing or {}).items():
                    self.record_probe(name, why is None, why)
        finally:
            self.worker.release(switch)

    def refuse(self, plan: Plan) -> PlanRefused:
        reasons = "; ".join(r.message for r in plan.refusals) or "the planner found it infeasible"
        return PlanRefused(f"stack '{plan.stack}' cannot be applied: {reasons}", plan=plan_json(plan))

    async def execute(self, switch: Switch, plan: Plan, journal_id: str) -> Execution:
        """Apply ``plan`` through the executor, journalling each done step under ``journal_id``."""
        switch.plan = plan
        switch.execution = Execution()

        async def journal(step: Mapping[str, object]) -> None:
            await asyncio.to_thread(self.store.record_step, journal_id, dict(step))

        return await self.executor.run(plan, self.config, switch.log, journal, switch.execution)

    async def run_steps(
        self,
        steps: tuple[Step, ...],
        config: StacksConfig,
        log: EventLog,
        before_step: Callable[[Step], Awaitable[None]] | None = None,
    ) -> Execution:
        """Apply ``steps`` to the active stack outside a switch (a lease's grant, on the worker),
        through the one executor: a failed step undoes the others; the caller journals them."""
        assert self._active is not None, "steps outside a switch need an active stack"
        return await self.executor.run_steps(self._active, steps, config, log, before_step)

    async def recover(self) -> RecoveryReport:
        """Reconcile the journal with what really runs; call once at start, before serving."""
        self._recovery = await self._startup.recover()
        return self._recovery

    # ---------------------------------------------------------------- for the periodic jobs and the router

    def touch(self, model: str) -> None:
        """Note that ``model`` served a request now (the idle TTL counts from here)."""
        self.members.touch(model)

    def last_used(self, model: str) -> float | None:
        return self.members.last_use.get(model)

    def record_probe(
        self, model: str, ok: bool, error: str | None = None, started_at: float | None = None
    ) -> None:
        """``started_at``: when the probe was sent. A result older than what is known already
        (the member was restarted by a switch while the probe ran) is dropped."""
        self.members.record_probe(self.config, model, ok, error, started_at)

    def record_probes(self, execution: Execution) -> None:
        """A switch's remote probes are probes too: status shows them, not "unprobed". An engine
        the switch started is a new engine: what a probe said of the one before it is forgotten."""
        started = [s.model for s in execution.done if isinstance(s, StartContainer | StartProcess)]
        self.members.restarted(started)
        for model in started:
            self.options.on_started(model, self.config)
        for name, error in {**execution.probed, **(execution.standing or {})}.items():
            self.record_probe(name, error is None, error)

    def verdict(self, model: str) -> Verdict:
        """The one health verdict of ``model`` (``MemberHealth.verdict``): status, ``/roles`` and
        the router read it; none decides health itself."""
        return self.members.verdict(self.config, model)

    def unavailable(self, model: str) -> str | None:
        """Why reason() must skip ``model`` now: a swarm member whose node is down or whose task
        does not run (what its last probe said), else None."""
        return self.members.unavailable(self.config, model)

    def record_job(self, name: str, ok: bool, summary: str) -> None:
        self.members.record_job(name, ok, summary)

    async def release(self, model: str, keep: Callable[[str], bool] | None = None) -> bool:
        """Stop an on-demand member (idle TTL). Runs on the worker; ``Conflict`` during a switch.

        ``keep`` is asked on the worker, right before the stop (a lease granted by a job queued
        earlier is seen): when it says True nothing stops and the answer is False."""
        refuse_release(model, self.worker.current)
        spec = self.config.models[model]

        async def stop() -> bool:
            if keep is not None and keep(model):
                return False
            await stop_engine(self.drivers, model, spec)
            return True

        stopped = await self.run_exclusive(stop)
        if stopped:
            self.members.last_use.pop(model, None)
        return stopped

    async def restart(self, model: str) -> None:
        """Stop and start again an engine of the active stack (a process or a container), on the
        worker: ``NotFound`` for a name the active stack lacks, ``Conflict`` during a switch or
        for a member with no engine of stackd's (Ollama, remote) or one on demand and stopped
        (a lease starts it)."""
        refuse_restart(self.config, self._active, model, self.worker.current)
        spec = self.config.models[model]

        async def again() -> None:
            await restart_engine(self.drivers, model, spec, await self.observe())

        log.info("restarting %s on request", model, extra={"member": model})
        await self.run_exclusive(again)

    # ---------------------------------------------------------------- status

    def snapshot(self) -> StatusSnapshot:
        """What status shows of the manager, copied now (a frozen value)."""
        return snapshot_of(
            self.config, self._active, self.live_roles.current, self.members, self.worker, self._recovery
        )

    async def status(self) -> dict[str, Any]:
        """Active stack, members and their state, roles, ledgers, last switch, recovery, jobs."""
        observation, hardware = await asyncio.gather(self.observe_detailed(), self.read_hardware())
        observation = with_measurements(observation, self.config, hardware, self.footprints(self.config))
        snapshot = self.snapshot()
        ledger_plan = active_ledger(self._planner, snapshot, observation, hardware)
        tails = {name: self.processes.log_tail(name, 10) for name in log_tail_wanted(snapshot, observation)}
        return build_status(
            dataclasses.replace(snapshot, log_tails=tails), observation, hardware, ledger_plan
        )
