"""Applying one plan: steps in order, make-before-break role swaps, and undo on failure.

Invariants this module keeps (the unit tests in ``tests/unit/test_manager*.py`` check them):

* Roles are never bound to a model that is not up: ``BindRole`` / ``UnbindRole`` only edit a
  *pending* table; the live table (``LiveRoles.swap``) takes it in one assignment just before
  the first ``StopContainer`` / ``StopProcess`` / ``UnloadModel`` (the planner orders stops last, so that is after
  every start, load and probe) or at the end. A plan that breaks before it makes (a swap group
  on a full card) gets one swap per stop boundary; a normal plan gets exactly one.
* Old backends stop only ``drain_s`` after the swap that took their roles away (the same holds
  for an undo that swaps the old table back before stopping what was started): a client that
  looked a role up just before the swap still reaches the backend it was given.
* A failed step leaves the previous stack running: the failed step itself (unless its engine
  could not even be reached) and then every done step are compensated in reverse order
  (start ↔ stop for containers and processes, load ↔ unload, role swap → the previous table; a pull is kept, it costs
  nothing to keep and a lot to redo). Compensations are the drivers' idempotent ``ensure_*``
  calls, so undoing a step that half happened is safe.
* A switch answers with what is true when it answers (``standing.py``): before it commits, the
  Swarm members of the stack are probed (their task on a live node, their endpoint answering);
  one this switch started that no longer answers fails the switch as its start would have, one it
  kept is reported degraded. After an undo the previous stack's members are probed, and the
  words say which answer and which do not instead of "running as before" on trust.
* Only ``Exception`` is a step failure. A ``BaseException`` (task cancellation, a simulated
  SIGKILL in tests) goes through untouched: the journal then still holds the intent and the
  steps recorded so far, and ``recover`` sorts it out at the next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import assert_never

from stackd.config.models import DEFAULT_PROCESS_START_TIMEOUT_S, Model, OllamaRuntime, StacksConfig
from stackd.drivers.base import HealthChecker
from stackd.errors import DriverFailed, DriverUnavailable
from stackd.manager.events import EventLog, PullThrottle, bindings_dict, step_dict
from stackd.manager.execution import Done, Execution, RolesSwapped, Undo, describe_error, done_json
from stackd.manager.seams import Drivers
from stackd.manager.standing import read_standing
from stackd.planner.kv import fill_utilization
from stackd.planner.members import is_clustered
from stackd.planner.plan import (
    BindRole,
    LoadModel,
    Plan,
    ProbeRemote,
    PullModel,
    StartContainer,
    StartProcess,
    StartStep,
    Step,
    StopContainer,
    StopProcess,
    StopStep,
    UnbindRole,
    UnloadModel,
)
from stackd.roles import LiveRoles, RoleTable

START_GRACE_S = 30.0  # on top of the model's start_timeout_s: the driver times out first


Journal = Callable[[dict[str, object]], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class PlanExecutor:
    """Runs plans through the drivers: the manager's one instance, for a switch's plan and for a
    lease's steps alike. What belongs to one run (its config, log, journal) is given to ``run``."""

    def __init__(
        self,
        drivers: Drivers,
        live_roles: LiveRoles,
        step_timeout_s: float = 300.0,
        drain_s: float = 0.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.drivers = drivers
        self.live_roles = live_roles
        self.step_timeout_s = step_timeout_s
        self.drain_s = drain_s
        self.sleep = sleep

    async def run(
        self,
        plan: Plan,
        config: StacksConfig,
        log: EventLog,
        journal: Journal,
        result: Execution | None = None,
    ) -> Execution:
        """Apply a switch's ``plan``, filling ``result`` (pass one in to let readers see progress).
        Members are probed before the answer (placement before a commit, the previous stack
        after an undo)."""
        config = fill_utilization(config, plan.kv, plan.vram)  # ${GPU_MEMORY_UTILIZATION}
        run = _PlanRun(self, config, log, journal, None, self.drivers.health)
        return await run.run(plan.stack, plan.steps, result if result is not None else Execution())

    async def run_steps(
        self,
        stack: str,
        steps: tuple[Step, ...],
        config: StacksConfig,
        log: EventLog,
        before_step: Callable[[Step], Awaitable[None]] | None = None,
    ) -> Execution:
        """Apply ``steps`` of ``stack`` outside a switch (a lease's grant): journalled by their
        owner, nothing probed. ``before_step`` runs before each step, as part of it: if it
        raises, the step failed and is undone with the rest (a lease waits there until NVML
        shows the memory of what it stopped back before it starts the next model)."""
        run = _PlanRun(self, config, log, _no_journal, before_step, None)
        return await run.run(stack, steps, Execution())


async def _no_journal(step: dict[str, object]) -> None:
    """Steps outside a switch are journalled by their owner (a lease as a lease)."""


class _PlanRun:
    """One run of steps: the pending role table, the log, the undo."""

    def __init__(
        self,
        executor: PlanExecutor,
        config: StacksConfig,
        log: EventLog,
        journal: Journal,
        before_step: Callable[[Step], Awaitable[None]] | None,
        health: HealthChecker | None,
    ) -> None:
        """``health`` probes members before the answer; None: no probes."""
        drivers = executor.drivers
        self._before_step = before_step
        self._health = health
        self._config = config
        self._drain_s = executor.drain_s
        self._sleep = executor.sleep
        self._containers = drivers.containers
        self._processes = drivers.processes
        self._ollama = drivers.ollama
        self._remotes = drivers.remotes
        self._live = executor.live_roles
        self._log = log
        self._journal = journal
        self._step_timeout_s = executor.step_timeout_s

    async def run(self, stack: str, steps: tuple[Step, ...], result: Execution) -> Execution:
        members = frozenset(self._config.stacks[stack].member_names)
        previous = self._live.current
        pending = dict(previous.bindings)
        for step in steps:
            if isinstance(step, StopStep) and await self._swap_if_changed(stack, pending, members, result):
                await self._drain()
            if isinstance(step, StopStep):
                await self._wait_requests_done(step.model)
            self._log.emit("step_started", step=step_dict(step))
            try:
                if self._before_step is not None:
                    await self._before_step(step)
                await self._timed(step, pending, result)
            except Exception as exc:
                result.failed_step = step
                result.error = exc
                self._log.emit("step_failed", step=step_dict(step), error=result.error_text)
                # An engine that could not be reached did nothing: only what was done is undone.
                await self._undo(None if isinstance(exc, DriverUnavailable) else step, result)
                await self._read_standing(previous.members, result)
                return result
            result.done.append(step)
            await self._journal(step_dict(step))
            self._log.emit("step_done", step=step_dict(step))
        unplaced = await self._check_placement(members, result)
        if unplaced is not None:
            self._log.emit("step_failed", step=step_dict(unplaced), error=result.error_text)
            await self._undo(None, result)  # the start is done: the undo stops it with the rest
            await self._read_standing(previous.members, result)
            return result
        await self._swap_if_changed(stack, pending, members, result)
        return result

    async def _check_placement(self, members: frozenset[str], result: Execution) -> Step | None:
        """Probe the stack's Swarm members before the commit. A node can die between a member's
        start and the commit: a member this switch started that does not answer now fails the
        switch (its start did not hold; the step is returned), one it kept is degraded."""
        models = self._config.models
        clustered = [name for name in members if is_clustered(models[name])]
        if self._health is None or not clustered:
            return None
        standing = await read_standing(self._health, models, clustered)
        started = {s.model: s for s in result.done if isinstance(s, StartContainer)}
        for name, why in standing.items():
            if why is not None and name in started:
                result.failed_step = started[name]
                result.error = DriverFailed(f"it no longer answered when the switch was to commit: {why}")
                return started[name]
        result.standing = dict(standing)
        for name, why in standing.items():
            if why is not None:
                result.degraded[name] = why
                self._log.emit("degraded", model=name, error=why)
        return None

    async def _read_standing(self, members: frozenset[str], result: Execution) -> None:
        """After an undo: probe what the previous stack runs, for the words of the answer."""
        if self._health is not None:
            result.standing = dict(await read_standing(self._health, self._config.models, members))

    async def _timed(self, step: Step, pending: dict[str, str], result: Execution) -> None:
        if isinstance(step, PullModel):
            # A pull of many GiB has no sensible overall bound; the driver bounds each read.
            await self._apply(step, pending, result)
            return
        limit = self._step_timeout_s
        if isinstance(step, StartContainer | StartProcess):
            limit = max(limit, self._start_timeout_s(step.model) + START_GRACE_S)
        try:
            async with asyncio.timeout(limit):
                await self._apply(step, pending, result)
        except TimeoutError as exc:
            raise TimeoutError(f"no answer within {limit:g} s") from exc

    async def _apply(self, step: Step, pending: dict[str, str], result: Execution) -> None:
        models = self._config.models
        match step:
            case StartContainer(model=name):
                await self._containers.ensure_running(name, models[name])
            case StopContainer(model=name):
                await self._containers.ensure_stopped(name, models[name])
            case StartProcess(model=name):
                await self._processes.ensure_running(name, models[name])
            case StopProcess(model=name):
                await self._processes.ensure_stopped(name, models[name])
            case PullModel(tag=tag):
                throttle = PullThrottle()
                async for line in self._ollama.pull(tag):
                    if throttle.wanted(tag, line.status, line.digest, line.completed, line.total):
                        self._log.emit(
                            "pull_progress",
                            step=step_dict(step),
                            tag=tag,
                            status=line.status,
                            digest=line.digest,
                            completed=line.completed,
                            total=line.total,
                        )
            case LoadModel(model=name):
                await self._ollama.load(_runtime(models, name))
            case UnloadModel(model=name):
                await self._ollama.unload(_runtime(models, name))
            case ProbeRemote(model=name, required=required):
                try:
                    await self._remotes.probe(name, models[name])
                except Exception as exc:
                    remote = models[name].remote
                    if required or (remote is not None and remote.required):
                        raise
                    result.degraded[name] = result.probed[name] = describe_error(exc)
                    self._log.emit("degraded", model=name, error=result.degraded[name])
                else:
                    result.probed[name] = None
            case BindRole(role=role, model=name):
                pending[role] = name
            case UnbindRole(role=role):
                pending.pop(role, None)
            case _:
                assert_never(step)

    async def _swap_if_changed(
        self, stack: str, pending: dict[str, str], members: frozenset[str], result: Execution
    ) -> bool:
        """Swap the live table to ``pending`` unless it already is that; True when it swapped."""
        live = self._live.current
        if live.stack == stack and dict(live.bindings) == pending and live.members == members:
            return False
        self._live.swap(RoleTable(stack=stack, bindings=dict(pending), members=members))
        swapped = RolesSwapped(previous=live, version=self._live.current.version)
        result.done.append(swapped)
        await self._journal(done_json(swapped))
        self._log.emit("roles_swapped", version=swapped.version, bindings=bindings_dict(pending))
        return True

    async def _wait_requests_done(self, model: str) -> None:
        """Requests the router started on ``model`` finish there before it stops (make-before-
        break for calls in flight), bounded by the longest a request may take (reason timeouts)."""
        in_flight = self._live.in_flight
        running = in_flight.count(model)
        if running:
            self._log.emit("draining", model=model, in_flight=running)
            limit = self._config.reason.timeouts.total_s
            if not await in_flight.wait_idle(model, limit):
                self._log.emit("draining", model=model, in_flight=in_flight.count(model), timed_out=True)

    async def _drain(self) -> None:
        """Let requests that started on the table just replaced finish before a backend stops."""
        if self._drain_s > 0:
            await self._sleep(self._drain_s)

    async def _undo(self, failed: Step | None, result: Execution) -> None:
        """Compensate the failed step (it may have half happened), then the done ones, newest first."""
        drain_due = False  # the old table is back: drain before stopping what it no longer uses
        for done in [*([failed] if failed else []), *reversed(result.done)]:
            if drain_due and isinstance(done, StartStep):
                await self._drain()
                drain_due = False
            try:
                async with asyncio.timeout(self._undo_limit(done)):
                    compensated = await self._compensate(done)
            except Exception as exc:
                undo = Undo(step=done_json(done), ok=False, error=describe_error(exc))
            else:
                if not compensated:
                    continue
                undo = Undo(step=done_json(done), ok=True)
            result.undone.append(undo)
            self._log.emit("undo_step", step=undo.step, ok=undo.ok, error=undo.error)
            drain_due = drain_due or (isinstance(done, RolesSwapped) and undo.ok)

    def _undo_limit(self, done: Done) -> float:
        if isinstance(done, StopContainer | StopProcess):  # undone by a start: allow for its start time
            return max(self._step_timeout_s, self._start_timeout_s(done.model) + START_GRACE_S)
        return self._step_timeout_s

    def _start_timeout_s(self, model: str) -> float:
        spec = self._config.models[model]
        if spec.health is not None:
            return spec.health.start_timeout_s
        return DEFAULT_PROCESS_START_TIMEOUT_S if spec.process is not None else 0.0

    async def _compensate(self, done: Done) -> bool:
        """Perform the inverse of ``done``; False when there is nothing to invert."""
        models = self._config.models
        match done:
            case RolesSwapped(previous=previous):
                self._live.swap(previous)
            case StartContainer(model=name):
                await self._containers.ensure_stopped(name, models[name])
            case StopContainer(model=name):
                await self._containers.ensure_running(name, models[name])
            case StartProcess(model=name):
                await self._processes.ensure_stopped(name, models[name])
            case StopProcess(model=name):
                await self._processes.ensure_running(name, models[name])
            case LoadModel(model=name):
                await self._ollama.unload(_runtime(models, name))
            case UnloadModel(model=name):
                await self._ollama.load(_runtime(models, name))
            case PullModel() | ProbeRemote() | BindRole() | UnbindRole():
                return False  # a pull is kept; a probe changed nothing; role edits were pending only
            case _:
                assert_never(done)
        return True


def _runtime(models: Mapping[str, Model], name: str) -> OllamaRuntime:
    runtime = models[name].ollama
    if runtime is None:
        raise ValueError(f"model {name} has no ollama section")
    return runtime
