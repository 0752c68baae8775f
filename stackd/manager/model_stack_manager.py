"""``ModelStackManager``: switches, recovery at start, and what the periodic jobs report.

See ``stackd.manager.core`` for the worker and the switch slot, ``executor`` for how one plan
is applied and undone, and ``recovery`` for the decision taken at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from stackd.config.models import Lifecycle, Runtime
from stackd.errors import Conflict, StackdError
from stackd.manager.core import JobResult, ManagerCore, ProbeResult
from stackd.manager.executor import Execution
from stackd.manager.observe import Observation, drift, with_measurements
from stackd.manager.recovery import RecoveryAction, RecoveryDecision, RecoveryReport, decide_recovery
from stackd.manager.status import build_status
from stackd.manager.switch import Switch, SwitchHandle, undo_json
from stackd.planner.members import is_clustered, is_up
from stackd.planner.plan import Plan, StartContainer, StartProcess
from stackd.planner.views import plan_json
from stackd.roles import RoleTable
from stackd.state.store import JournalEntry

log = logging.getLogger("stackd.manager")


class ModelStackManager(ManagerCore):
    """Applies stacks through the drivers. Build once in the app factory; call ``recover`` at start.

    Constructor arguments: see ``ManagerCore``.
    """

    # ---------------------------------------------------------------- switching

    async def submit_switch(self, target: str, dry_run: bool = False) -> SwitchHandle:
        """Plan a switch to ``target`` and queue it; returns at once with the switch's id.

        ``NotFound`` for an unknown stack, ``Conflict`` while another switch runs, ``PlanRefused``
        (carrying the plan) when it does not fit: in those cases nothing changes. A dry run only
        plans: it holds no slot and its handle is already finished.
        """
        self.known(target)
        if dry_run:
            plan = await self.plan(target)
            return SwitchHandle(id="dry-run", target=target, plan=plan, dry_run=True)
        switch = self._reserve(target, self._active)
        try:
            plan = await self.plan(target)
            if not plan.feasible:
                raise self._refuse(plan)
        except BaseException:
            self._release(switch)
            raise
        switch.plan = plan
        self._remember(switch)
        self._enqueue(lambda: self._run_switch(switch, plan))
        return SwitchHandle(id=switch.id, target=target, plan=plan, dry_run=False, _switch=switch)

    async def _run_switch(self, switch: Switch, plan: Plan) -> None:
        switch.state = "running"
        try:
            await asyncio.to_thread(
                self.store.begin_switch, switch.id, switch.from_stack, switch.target, plan_json(plan)
            )
            execution = await self._execute(switch, plan, journal_id=switch.id)
            if execution.ok:
                await asyncio.to_thread(
                    self.store.commit_switch,
                    switch.id,
                    execution.result_json(switch.id, switch.target, switch.from_stack),
                )
                self._active = switch.target
                self.degraded = dict(execution.degraded)
                self._record_probes(execution)
                switch.finish("succeeded", None, self.wall_clock())
            else:
                error = execution.failure_sentence(switch.from_stack)
                undone = [undo_json(u) for u in execution.undone]
                await asyncio.to_thread(
                    self.store.fail_switch,
                    switch.id,
                    error,
                    undone,
                    fully_undone=execution.fully_undone,
                    result_json=execution.result_json(switch.id, switch.target, switch.from_stack, error),
                )
                switch.finish("rolled_back" if execution.fully_undone else "failed", error, self.wall_clock())
        except Exception as exc:
            # The journal could not be written (another switch open, disk error): the steps, if
            # any ran, are what the journal says; recovery at the next start reconciles the rest.
            switch.finish("failed", f"switch {switch.id}: the state store failed: {exc}", self.wall_clock())
        except BaseException:
            switch.finish(
                "failed",
                "interrupted: the daemon stopped during the switch; the next start recovers it",
                self.wall_clock(),
            )
            raise
        finally:
            self._release(switch)

    # ---------------------------------------------------------------- recovery at start

    async def recover(self) -> RecoveryReport:
        """Reconcile the journal with what really runs; call once at start, before serving."""
        entry = await asyncio.to_thread(self.store.open_switch)
        report = await (self._recover_open(entry) if entry is not None else self._restore())
        self._recovery = report
        log.info("recovery: %s", report.message)
        return report

    async def _recover_open(self, entry: JournalEntry) -> RecoveryReport:
        observation = await self.observe_detailed()
        decision = decide_recovery(self.config, entry, observation.state)
        if decision.direction == "finish" and entry.from_stack in self.config.stacks:
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
        switch = self._reserve(decision.stack, entry.from_stack, switch_id=entry.switch_id, kind="recovery")
        self._remember(switch)
        try:
            return await self.run_exclusive(lambda: self._apply_recovery(switch, entry, decision))
        finally:
            self._release(switch)

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
            plan = await self.plan(decision.stack)
            if not plan.feasible:
                error = self._refuse(plan).message
            else:
                execution = await self._execute(switch, plan, journal_id=entry.switch_id)
                self._record_probes(execution)
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
        await asyncio.to_thread(self.store.finish_recovery, entry.switch_id, active, message, result)
        self._active = active
        switch.note = message
        switch.finish("succeeded" if error is None else "failed", error, self.wall_clock())
        return RecoveryReport(
            action, active, message, entry.switch_id, left, involved if action == "unresolved" else ()
        )

    async def _restore(self) -> RecoveryReport:
        active = self._active
        if active is not None and active in self.config.stacks and not self.repair_on_start:
            observation = await self.observe_detailed()
            self._bind_what_runs(active, observation)
            left = tuple(drift(self.config, active, observation))
            return RecoveryReport(
                "restored",
                active,
                f"restored the role table of '{active}'" + (f"; drift: {'; '.join(left)}" if left else ""),
                None,
                left,
            )
        action: RecoveryAction
        if active is None:
            stack, action, why = self.config.default_stack, "first_start", "first start"
        elif active not in self.config.stacks:
            stack, action = self.config.default_stack, "default_applied"
            why = f"the persisted stack '{active}' is no longer in the config"
        else:
            stack, action, why = active, "restored", "restart"
        switch_id, error, steps = await self._apply_stack(stack)
        if error is not None and action == "first_start":
            # This machine may lack what the default needs (a GPU, Docker): take the first stack
            # of fallback_stacks that runs, and say why each earlier one was passed over.
            passed = [f"'{stack}' could not run: {error}"]
            for candidate in self.config.fallback_stacks:
                if candidate == stack:
                    continue
                switch_id, error, steps = await self._apply_stack(candidate)
                if error is None:
                    why = f"first start: {'; '.join(passed)}; so stackd picked '{candidate}' from fallback_stacks"
                    stack = candidate
                    break
                passed.append(f"'{candidate}' could not run: {error}")
            else:
                why = f"first start: {'; '.join(passed)}"
                error = "no stack of default_stack and fallback_stacks could run here"
        left = tuple(await self._drift_of(stack)) if error is None else ()
        if error is None and not left:
            return RecoveryReport(action, stack, f"{why}: applied '{stack}' ({steps} steps)", switch_id)
        fallback = self._active if self._active in self.config.stacks else None
        observation = await self.observe_detailed()
        if fallback is not None and error is not None:
            self._bind_what_runs(fallback, observation)
        left = tuple(drift(self.config, fallback or stack, observation))
        what = f"applying '{stack}' failed: {error}" if error else f"applied '{stack}' ({steps} steps)"
        if error is not None and action == "first_start" and self.config.fallback_stacks:
            what = error
        return RecoveryReport(
            "unresolved", fallback, f"{why}: {what}; drift: {'; '.join(left) or 'none'}", switch_id, left
        )

    async def _apply_stack(self, stack: str) -> tuple[str | None, str | None, int]:
        """Switch to ``stack`` and wait: (switch id, error or None, steps done)."""
        try:
            handle = await self.submit_switch(stack)
            await handle.wait()
        except StackdError as exc:
            return None, exc.message, 0
        switch = self._switches[handle.id]
        error = switch.error if switch.state != "succeeded" else None
        return handle.id, error, len(switch.execution.done) if switch.execution else 0

    def _bind_what_runs(self, stack: str, observation: Observation) -> None:
        """Bind the roles of ``stack`` whose model is up (or on demand: a lease starts it)."""
        models = self.config.models
        bindings = {
            role: name
            for role, name in self.config.stacks[stack].roles.items()
            if models[name].lifecycle == Lifecycle.on_demand or is_up(name, models[name], observation.state)
        }
        members = frozenset(self.config.stacks[stack].member_names)
        self.live_roles.swap(RoleTable(stack=stack, bindings=bindings, members=members))

    async def _not_ready(self, stack: str, observation: Observation) -> list[str]:
        """Sentences for the running always-on containers and engine processes of ``stack`` that
        do not get ready within their start timeout (``ensure_running`` of a running one only waits)."""
        out = []
        state = observation.state
        for name in self.config.stacks[stack].member_names:
            model = self.config.models[name]
            if model.lifecycle != Lifecycle.always_on:
                continue
            try:
                if model.runtime == Runtime.docker and name in state.running_containers:
                    await self.containers.ensure_running(name, model)
                elif model.runtime == Runtime.process and name in state.running_processes:
                    await self.processes.ensure_running(name, model)
            except StackdError as exc:
                out.append(f"{name}: {exc.message}")
        return out

    async def _drift_of(self, stack: str, involved: tuple[str | None, ...] = ()) -> list[str]:
        return drift(self.config, stack, await self.observe_detailed(), involved)

    # ---------------------------------------------------------------- for the periodic jobs and the router

    def touch(self, model: str) -> None:
        """Note that ``model`` served a request now (the idle TTL counts from here)."""
        self._last_use[model] = self.clock()

    def last_used(self, model: str) -> float | None:
        return self._last_use.get(model)

    def record_probe(
        self, model: str, ok: bool, error: str | None = None, started_at: float | None = None
    ) -> None:
        """``started_at``: when the probe was sent. A result older than what is known already
        (the member was restarted by a switch while the probe ran) says nothing about the engine
        that runs now, and is dropped."""
        known = self.probes.get(model)
        if started_at is not None and known is not None and known.at > started_at:
            return
        if started_at is not None and self._started_at.get(model, float("-inf")) > started_at:
            return
        self.probes[model] = ProbeResult(ok, self.wall_clock(), error)
        clustered = is_clustered(self.config.models[model])
        if self.config.models[model].runtime == Runtime.remote or clustered:
            if ok:
                if self.degraded.pop(model, None) is not None and clustered:
                    log.info("member %s serves again", model)
            else:
                if clustered and self.degraded.get(model) != error:
                    log.warning("member %s degraded: %s", model, error)
                self.degraded[model] = error or "unreachable"

    def _record_probes(self, execution: Execution) -> None:
        """A switch's remote probes are probes too: status shows them, not "unprobed". An engine
        the switch started is a new engine: what a probe said of the one before it is forgotten."""
        now = self.wall_clock()
        for step in execution.done:
            if isinstance(step, StartContainer | StartProcess):
                self.probes.pop(step.model, None)
                self._started_at[step.model] = now
                self.on_started(step.model)
        for name, error in execution.probed.items():
            self.record_probe(name, error is None, error)

    def unavailable(self, model: str) -> str | None:
        """Why reason() must skip ``model`` now: a swarm member whose node is down or whose task
        does not run (what its last probe said), else None."""
        if model in self.config.models and is_clustered(self.config.models[model]):
            return self.degraded.get(model)
        return None

    def record_job(self, name: str, ok: bool, summary: str) -> None:
        self.jobs[name] = JobResult(ok, self.wall_clock(), summary)

    async def release(self, model: str, keep: Callable[[str], bool] | None = None) -> bool:
        """Stop an on-demand member (idle TTL). Runs on the worker; ``Conflict`` during a switch.

        ``keep`` is asked on the worker, right before the stop (a lease granted by a job queued
        earlier is seen): when it says True nothing stops and the answer is False."""
        if self._current is not None:
            raise Conflict(
                f"switch {self._current.id} is in progress; {model} is released later",
                switch_id=self._current.id,
                stack=self._current.target,
            )
        spec = self.config.models[model]

        async def stop() -> bool:
            if keep is not None and keep(model):
                return False
            if spec.runtime == Runtime.docker:
                await self.containers.ensure_stopped(model, spec)
            elif spec.runtime == Runtime.process:
                await self.processes.ensure_stopped(model, spec)
            elif spec.ollama is not None:
                await self.ollama.unload(spec.ollama)
            return True

        stopped = await self.run_exclusive(stop)
        if stopped:
            self._last_use.pop(model, None)
        return stopped

    async def status(self) -> dict[str, Any]:
        """Active stack, members and their state, roles, ledgers, last switch, recovery, jobs."""
        observation, hardware = await asyncio.gather(self.observe_detailed(), self.read_hardware())
        observation = with_measurements(observation, self.config, hardware, self.footprints(self.config))
        ledger_plan = None
        if self._active in self.config.stacks:
            assert self._active is not None
            try:
                ledger_plan = self.plan_from(observation.state, self._active, hardware)
            except Exception:  # a ledger is a nicety: status must answer even if the planner cannot
                log.exception("planning the active stack's ledger failed")
        return build_status(self, observation, hardware, ledger_plan)

    @property
    def recovery(self) -> RecoveryReport | None:
        return self._recovery

    @property
    def last_switch(self) -> Switch | None:
        return self._last_switch

    def last_switch_summary(self) -> dict[str, Any] | None:
        """The last switch of this run, or else the newest of the history (an earlier run)."""
        if self._last_switch is not None:
            d = self._last_switch.to_dict()
            keys = (
                "switch_id",
                "kind",
                "stack",
                "from_stack",
                "state",
                "error",
                "note",
                "degraded",
                "undone",
                "started_at",
                "finished_at",
            )
            return {k: d.get(k) for k in keys}
        newest = self.store.history(1)  # a read: microseconds
        if not newest:
            return None
        h = newest[0]
        error = h.result.get("error") if isinstance(h.result, dict) else None
        return {
            "switch_id": h.switch_id,
            "kind": "switch",
            "stack": h.target_stack,
            "from_stack": h.from_stack,
            "journal_state": h.state,
            "error": error,
            "started_at": h.started_at,
            "finished_at": h.finished_at,
        }
