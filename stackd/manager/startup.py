"""``StartupRecovery``: what the daemon does at start, applied (``recovery`` decides).

An open switch in the journal is finished or rolled back on the worker; with none, the
persisted stack is re-applied (or only its role table bound, when ``repair_on_start`` is off),
and a first start falls back along ``fallback_stacks``. It acts through the ``RecoveryHost`` it
is given (the manager): the worker, the executor, observation and planning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from stackd.config.models import Lifecycle, Runtime, StacksConfig
from stackd.drivers.base import ContainerDriver, ProcessDriver
from stackd.drivers.container_env import in_container, no_stack_hint
from stackd.errors import PlanRefused, StackdError
from stackd.manager.execution import Execution
from stackd.manager.observe import Observation, drift
from stackd.manager.recovery import RecoveryAction, RecoveryDecision, RecoveryReport, decide_recovery
from stackd.manager.switch import Switch, SwitchHandle
from stackd.manager.worker import SwitchWorker
from stackd.planner.members import is_up
from stackd.planner.plan import Plan
from stackd.roles import LiveRoles, RoleTable
from stackd.state.store import JournalEntry, StateStore

log = logging.getLogger("stackd.manager")


class RecoveryHost(Protocol):
    """What recovery needs of the manager."""

    @property
    def config(self) -> StacksConfig: ...
    @property
    def store(self) -> StateStore: ...
    @property
    def containers(self) -> ContainerDriver: ...
    @property
    def processes(self) -> ProcessDriver: ...
    @property
    def live_roles(self) -> LiveRoles: ...
    @property
    def worker(self) -> SwitchWorker: ...
    @property
    def wall_clock(self) -> Callable[[], float]: ...
    @property
    def repair_on_start(self) -> bool: ...
    @property
    def active_stack(self) -> str | None: ...
    def set_active(self, stack: str | None) -> None: ...
    async def observe_detailed(self) -> Observation: ...
    async def plan(self, target: str) -> Plan: ...
    def refuse(self, plan: Plan) -> PlanRefused: ...
    async def execute(self, switch: Switch, plan: Plan, journal_id: str) -> Execution: ...
    def record_probes(self, execution: Execution) -> None: ...
    async def submit_switch(self, target: str, dry_run: bool = False) -> SwitchHandle: ...


class StartupRecovery:
    """``in_container`` says whether stackd runs in a container: a first start where no stack
    could run says what helps there (a config, the container's devices), not what to install."""

    def __init__(self, host: RecoveryHost, in_container: Callable[[], bool] = in_container) -> None:
        self.host = host
        self._in_container = in_container

    async def recover(self) -> RecoveryReport:
        """Reconcile the journal with what really runs; call once at start, before serving."""
        entry = await asyncio.to_thread(self.host.store.open_switch)
        report = await (self._recover_open(entry) if entry is not None else self._restore())
        log.info("recovery: %s", report.message)
        return report

    async def _recover_open(self, entry: JournalEntry) -> RecoveryReport:
        observation = await self.host.observe_detailed()
        decision = decide_recovery(self.host.config, entry, observation.state)
        if decision.direction == "finish" and entry.from_stack in self.host.config.stacks:
            # "Running" is not "ready": a container killed mid-start may still be loading. The
            # finishing plan binds roles to what runs, so wait until it serves, or roll back.
            not_ready = await self._not_ready(decision.stack, observation)
            if not_ready:
                assert entry.from_stack is not None
                decision = RecoveryDecision(
                    "roll_back",
                    entry.from_stack,
                    f"'{decision.stack}' was not ready ({'; '.join(not_ready)})",
                )
        switch = self.host.worker.reserve(
            decision.stack, entry.from_stack, switch_id=entry.switch_id, kind="recovery"
        )
        self.host.worker.remember(switch)
        try:
            return await self.host.worker.run_exclusive(lambda: self._apply_recovery(switch, entry, decision))
        finally:
            self.host.worker.release(switch)

    async def _apply_recovery(
        self, switch: Switch, entry: JournalEntry, decision: RecoveryDecision
    ) -> RecoveryReport:
        switch.state = "running"
        interrupted = (
            f"the daemon stopped during switch {entry.switch_id} "
            f"({entry.from_stack or 'nothing'} -> {entry.target_stack})"
        )
        error: str | None = None
        try:
            plan = await self.host.plan(decision.stack)
            if not plan.feasible:
                error = self.host.refuse(plan).message
            else:
                execution = await self.host.execute(switch, plan, journal_id=entry.switch_id)
                self.host.record_probes(execution)
                error = None if execution.ok else execution.failure_sentence(None)
        except Exception as exc:  # recovery must report, never stop the daemon from starting
            error = exc.message if isinstance(exc, StackdError) else f"{type(exc).__name__}: {exc}"
        applied = error is None
        involved = (entry.from_stack, entry.target_stack)
        left = tuple(await self._drift_of(decision.stack, involved))
        if error is None and left:
            error = "what runs still differs from it"
        if error is None:
            action: RecoveryAction = "finished" if decision.direction == "finish" else "rolled_back"
            verb = "finished it" if action == "finished" else f"rolled back to '{decision.stack}'"
            active: str | None = decision.stack
            message = f"{interrupted}; {decision.reason}, so stackd {verb}"
        else:
            # Roles follow what was applied: the decided stack when its plan ran through.
            action, active = "unresolved", decision.stack if applied else entry.from_stack
            if active not in (None, decision.stack):
                assert active is not None
                left = tuple(await self._drift_of(active, involved))
            message = (
                f"{interrupted}; {decision.reason}; going to '{decision.stack}' failed: {error}. "
                f"Drift left: {'; '.join(left) or 'none observed'}"
            )
        result = {"recovery": action, "stack": decision.stack, "message": message}
        await asyncio.to_thread(self.host.store.finish_recovery, entry.switch_id, active, message, result)
        self.host.set_active(active)
        switch.note = message
        switch.finish("succeeded" if error is None else "failed", error, self.host.wall_clock())
        return RecoveryReport(
            action, active, message, entry.switch_id, left, involved if action == "unresolved" else ()
        )

    async def _restore(self) -> RecoveryReport:
        active = self.host.active_stack
        if active is not None and active in self.host.config.stacks and not self.host.repair_on_start:
            observation = await self.host.observe_detailed()
            self._bind_what_runs(active, observation)
            left = tuple(drift(self.host.config, active, observation))
            return RecoveryReport(
                "restored",
                active,
                f"restored the role table of '{active}'" + (f"; drift: {'; '.join(left)}" if left else ""),
                None,
                left,
            )
        action: RecoveryAction
        if active is None:
            stack, action, why = self.host.config.default_stack, "first_start", "first start"
        elif active not in self.host.config.stacks:
            stack, action = self.host.config.default_stack, "default_applied"
            why = f"the persisted stack '{active}' is no longer in the config"
        else:
            stack, action, why = active, "restored", "restart"
        applied = await self._apply_stack(stack)
        switch_id, error, steps = applied
        if error is not None and action == "first_start":
            stack, (switch_id, error, steps), why = await self._fall_back(stack, applied)
        left = tuple(await self._drift_of(stack)) if error is None else ()
        if error is None and not left:
            return RecoveryReport(action, stack, f"{why}: applied '{stack}' ({steps} steps)", switch_id)
        fallback = self.host.active_stack if self.host.active_stack in self.host.config.stacks else None
        observation = await self.host.observe_detailed()
        if fallback is not None and error is not None:
            self._bind_what_runs(fallback, observation)
        left = tuple(drift(self.host.config, fallback or stack, observation))
        what = f"applying '{stack}' failed: {error}" if error else f"applied '{stack}' ({steps} steps)"
        if error is not None and action == "first_start" and self.host.config.fallback_stacks:
            what = error
        return RecoveryReport(
            "unresolved", fallback, f"{why}: {what}; drift: {'; '.join(left) or 'none'}", switch_id, left
        )

    async def _fall_back(
        self, stack: str, applied: tuple[str | None, str | None, int]
    ) -> tuple[str, tuple[str | None, str | None, int], str]:
        """The default failed at a first start: this machine may lack what it needs (a GPU,
        Docker). Take the first stack of fallback_stacks that runs, and say why each earlier one
        was passed over: (the stack, its ``_apply_stack`` answer, why)."""
        passed = [f"'{stack}' could not run: {applied[1]}"]
        for candidate in self.host.config.fallback_stacks:
            if candidate == stack:
                continue
            applied = await self._apply_stack(candidate)
            if applied[1] is None:
                why = f"first start: {'; '.join(passed)}; so stackd picked '{candidate}' from fallback_stacks"
                return candidate, applied, why
            passed.append(f"'{candidate}' could not run: {applied[1]}")
        hint = no_stack_hint(self._in_container())
        error = f"no stack of default_stack and fallback_stacks could run here; {hint}"
        return stack, (applied[0], error, applied[2]), f"first start: {'; '.join(passed)}"

    async def _apply_stack(self, stack: str) -> tuple[str | None, str | None, int]:
        """Switch to ``stack`` and wait: (switch id, error or None, steps done)."""
        try:
            handle = await self.host.submit_switch(stack)
            await handle.wait()
        except StackdError as exc:
            return None, exc.message, 0
        switch = self.host.worker.switches[handle.id]
        error = switch.error if switch.state != "succeeded" else None
        return handle.id, error, len(switch.execution.done) if switch.execution else 0

    def _bind_what_runs(self, stack: str, observation: Observation) -> None:
        """Bind the roles of ``stack`` whose model is up (or on demand: a lease starts it)."""
        models = self.host.config.models
        bindings = {
            role: name
            for role, name in self.host.config.stacks[stack].roles.items()
            if models[name].lifecycle == Lifecycle.on_demand or is_up(name, models[name], observation.state)
        }
        members = frozenset(self.host.config.stacks[stack].member_names)
        self.host.live_roles.swap(RoleTable(stack=stack, bindings=bindings, members=members))

    async def _not_ready(self, stack: str, observation: Observation) -> list[str]:
        """Sentences for the running always-on containers and engine processes of ``stack`` that
        do not get ready within their start timeout (``ensure_running`` of a running one only waits)."""
        out = []
        state = observation.state
        for name in self.host.config.stacks[stack].member_names:
            model = self.host.config.models[name]
            if model.lifecycle != Lifecycle.always_on:
                continue
            try:
                if model.runtime == Runtime.docker and name in state.running_containers:
                    await self.host.containers.ensure_running(name, model)
                elif model.runtime == Runtime.process and name in state.running_processes:
                    await self.host.processes.ensure_running(name, model)
            except StackdError as exc:
                out.append(f"{name}: {exc.message}")
        return out

    async def _drift_of(self, stack: str, involved: tuple[str | None, ...] = ()) -> list[str]:
        return drift(self.host.config, stack, await self.host.observe_detailed(), involved)
