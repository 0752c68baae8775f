"""Leases of on-demand GPU models: the coordinator that holds them, queues what must wait, and
applies the pure decision (``stackd.gpu.decide``) through the manager's ``PlanExecutor``.

A lease says "keep this on-demand model resident until ``expires_at``". ``acquire`` puts the
request at the back of one FIFO queue; a single pump task tries the head (on the manager's
worker, so a lease never interleaves with a switch or an idle release, from a fresh observation
and NVML reading) and either grants it, refuses it (the config says no, the card can never hold
it, an engine failed), or leaves it waiting: nothing behind the head is tried before it, so a
large request is never starved by smaller ones. A waiter is served when memory frees (a lease is
released or expires, a foreign process exits), or answered 503 with ``Retry-After`` and the
reason at its ``wait_s`` deadline.

A grant runs its stops and its start as a plan through ``PlanExecutor`` (its undo puts back what
was evicted when the start fails); after a stop it waits, bounded, until NVML shows the memory
back before it starts the next model. Once the model is ready its NVML footprint (the engine's
PIDs: the process tree, or the container's host PIDs) is remembered in the state store, and the
lease is journalled there too: a restarted daemon restores its live leases.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, assert_never

from stackd.config.models import Model, Placement, StacksConfig
from stackd.errors import Conflict, DriverFailed, DriverUnavailable, NotFound, StackdError
from stackd.gpu.decide import (
    Lease,
    LeaseDecision,
    LeaseRefusal,
    config_refusal,
    decide_lease,
    gpu_room,
    leasable,
    retry_after,
    swap_group,
    waiting_reason,
)
from stackd.manager.events import EventLog
from stackd.manager.executor import PlanExecutor
from stackd.manager.observe import with_measurements
from stackd.planner.footprints import budget_mib, footprint_digest
from stackd.planner.members import gib
from stackd.planner.plan import Plan, RamLedger, StartContainer, StartProcess
from stackd.planner.views import redact_url
from stackd.state.gpu import GpuJournal, LeaseRow

if TYPE_CHECKING:
    from stackd.manager import ModelStackManager

__all__ = [
    "Lease",
    "LeaseCoordinator",
    "LeaseRefused",
    "LeaseUnavailable",
    "decide_lease",
    "leasable",
    "swap_group",
]

log = logging.getLogger("stackd.gpu")

DEFAULT_TTL_S = 600.0  # a lease on a model without idle_ttl_s
MAX_WAITERS = 64
ContainerPids = Callable[[str, Model], Awaitable[tuple[int, ...]]]
Sleep = Callable[[float], Awaitable[None]]


class LeaseRefused(StackdError):
    """The model cannot be leased in this stack (not a member, not on demand, not a GPU member,
    larger than the card can ever give it)."""

    status = 422


class LeaseUnavailable(StackdError):
    """The lease could not be served by its deadline (a lease or another process holds the
    memory), or GPU memory did not come back after a stop. ``retry_after_s`` says when to retry."""

    status = 503


def refusal_error(refusal: LeaseRefusal) -> StackdError:
    """The API's error for a refusal: 404 unknown model, 503 still waiting at the deadline, 422 otherwise."""
    match refusal.code:
        case "unknown_model":
            return NotFound(refusal.message)
        case "held" | "no_room":
            return LeaseUnavailable(
                refusal.message,
                code=refusal.code,
                holders=[lease_brief(h) for h in refusal.holders],
                retry_after_s=round(refusal.retry_after_s or 5.0, 1),
            )
        case "no_active_stack" | "not_member" | "not_on_demand" | "not_gpu" | "too_large":
            return LeaseRefused(refusal.message, code=refusal.code)
        case _:
            assert_never(refusal.code)


def lease_brief(lease: Lease) -> dict[str, Any]:
    return {"lease_id": lease.id, "model": lease.model, "expires_at": lease.expires_at}


@dataclass
class Waiter:
    """One request in the queue. ``refusal``: why it waited at its last try (None: not tried)."""

    id: str
    model: str
    ttl_s: float | None
    enqueued_at: float
    deadline: float
    future: asyncio.Future[Lease]
    refusal: LeaseRefusal | None = None


async def _no_journal(step: Any) -> None:
    """Leases are journalled as leases (``GpuJournal``), not as switches."""


class LeaseCoordinator:
    """The daemon's leases. Build once with the manager.

    ``clock`` (Unix seconds: a lease's expiry is shown to people and journalled) times expiry and
    deadlines; ``sleep`` is how the pump waits (tests inject one that moves a fake clock);
    ``journal`` keeps leases and footprints across restarts; ``container_pids`` maps a docker
    member to its host PIDs (``stackd.drivers.docker_pids``); ``poll_s`` is how often a waiting
    head is tried again when nothing wakes it; ``release_wait_s`` bounds the wait for NVML to
    show a stopped member's memory back.
    """

    def __init__(
        self,
        manager: ModelStackManager,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
        journal: GpuJournal | None = None,
        container_pids: ContainerPids | None = None,
        sleep: Sleep = asyncio.sleep,
        poll_s: float = 2.0,
        release_wait_s: float = 30.0,
    ) -> None:
        self.manager = manager
        self.clock = clock
        self._new_id = new_id
        self._journal = journal
        self._container_pids = container_pids
        self._sleep = sleep
        self.poll_s = poll_s
        self.release_wait_s = release_wait_s
        self._leases: dict[str, Lease] = {}
        self._queue: deque[Waiter] = deque()
        self._waiter_ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._measuring: set[asyncio.Task[None]] = set()
        if journal is not None:
            self._restore(journal)

    def _restore(self, journal: GpuJournal) -> None:
        """Take back the journalled leases that are still live (a restart keeps them)."""
        now = self.clock()
        for row in journal.leases():
            if row.expires_at > now:
                self._leases[row.lease_id] = Lease(
                    row.lease_id, row.model, row.acquired_at, row.expires_at, row.ttl_s
                )
            else:
                journal.delete_lease(row.lease_id)

    def default_ttl_s(self, model: str) -> float:
        spec = self.manager.config.models.get(model)
        return float(spec.idle_ttl_s) if spec is not None and spec.idle_ttl_s else DEFAULT_TTL_S

    # ---------------------------------------------------------------- acquiring: the queue and its pump

    async def acquire(self, model: str, ttl_s: float | None = None, wait_s: float = 0.0) -> Lease:
        """Make ``model`` resident and ready, and lease it for ``ttl_s`` (default: its idle TTL),
        waiting up to ``wait_s`` in the FIFO queue when it cannot be served now.

        Raises ``NotFound`` (unknown model), ``Conflict`` (a switch runs), ``LeaseRefused`` (not
        leasable in the active stack, or larger than the card can give), ``LeaseUnavailable``
        (still held at the deadline: the message names the lease and when it ends; or the queue
        is full), or the driver's error when the member does not start. Another lease on the
        same model shares the resident member. What the config alone refuses is refused before
        Docker is asked."""
        if model not in self.manager.config.models:
            self._refuse_by_config(model)
        self._refuse_during_switch(model)
        if len(self._queue) >= MAX_WAITERS:
            raise LeaseUnavailable(
                f"{len(self._queue)} lease requests wait already; try again later",
                code="queue_full",
                retry_after_s=self.poll_s,
            )
        now = self.clock()
        waiter = Waiter(
            f"wait-{next(self._waiter_ids)}",
            model,
            ttl_s,
            now,
            now + max(wait_s, 0.0),
            asyncio.get_running_loop().create_future(),
        )
        self._queue.append(waiter)
        self._kick()
        return await waiter.future  # a caller that goes away cancels it: the pump then skips it

    def _kick(self) -> None:
        self._wake.set()
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.create_task(self._pump(), name="stackd-lease-queue")

    async def _pump(self) -> None:
        """Serve the queue head first, always; wait for a change when it cannot be served."""
        while self._queue:
            self._wake.clear()
            self._expire_waiters()  # a waiter already tried is never served past its deadline
            if not self._queue:
                break
            head = self._queue[0]
            try:
                outcome = await self.manager.run_exclusive(functools.partial(self._try, head))
            except Exception as exc:
                self._queue.popleft()
                if not head.future.done():
                    head.future.set_exception(exc)
                continue
            if isinstance(outcome, Lease):
                self._queue.popleft()
                if head.future.done():  # the caller left while it was being served
                    await self._end(outcome.id)
                else:
                    head.future.set_result(outcome)
                continue
            head.refusal = outcome
            self._expire_waiters()
            if not self._queue or self._queue[0] is not head:
                continue
            now = self.clock()
            delay = min([self.poll_s, *(w.deadline - now for w in self._queue)])
            if outcome.retry_after_s is not None:
                delay = min(delay, outcome.retry_after_s)
            await self._nap(max(delay, 0.0))

    def _expire_waiters(self) -> None:
        """Answer every waiter whose deadline passed: 503 with the reason it still waits."""
        now = self.clock()
        head = next((w for w in self._queue if not w.future.done()), None)
        for waiter in list(self._queue):
            if waiter.future.done():
                self._queue.remove(waiter)
            elif now >= waiter.deadline and (waiter is not head or waiter.refusal is not None):
                self._queue.remove(waiter)
                waiter.future.set_exception(self._deadline_error(waiter, head))

    def _deadline_error(self, waiter: Waiter, head: Waiter | None) -> StackdError:
        now = self.clock()
        if waiter.refusal is not None:
            # The reason and the retry as of now, not as of the last try.
            refusal = replace(waiter.refusal, retry_after_s=retry_after(waiter.refusal, now))
            error = refusal_error(refusal)
            waited = now - waiter.enqueued_at
            error.message = f"not served within {waited:.0f} s: {waiting_reason(refusal, now)}" + (
                f"; {refusal.message}" if refusal.holders else ""
            )
            error.args = (error.message,)
            return error
        ahead = head.refusal if head is not None and head.refusal is not None else None
        why = f": {head.model if head else '?'} is {waiting_reason(ahead, self.clock())}" if ahead else ""
        return LeaseUnavailable(
            f"{waiter.model} was not served within its wait: earlier lease requests come first{why}",
            code="queued",
            retry_after_s=round((ahead.retry_after_s if ahead else None) or self.poll_s, 1),
        )

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds`` unless something wakes the queue first (a release, a new waiter)."""
        woken = asyncio.ensure_future(self._wake.wait())
        slept = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()

    async def _try(self, waiter: Waiter) -> Lease | LeaseRefusal:
        """On the worker: grant ``waiter`` now, or say why it waits; raise when it never will."""
        model = waiter.model
        self._refuse_during_switch(model)
        self._refuse_by_config(model)  # the config and the active stack of now
        manager, config = self.manager, self.manager.config
        observation = await manager.observe_detailed()
        if "docker" in observation.problems and config.models[model].docker is not None:
            raise DriverUnavailable(observation.problems["docker"])
        hardware = await manager.read_hardware()
        observed = with_measurements(observation, config, hardware, manager.footprints(config)).state
        used = {n: t for n in config.models if (t := manager.last_used(n)) is not None}
        decision = decide_lease(
            config,
            manager.active_stack,
            observed,
            self.live(),
            model,
            gpu_room(config, observed, hardware),
            used,
            self.clock(),
        )
        if decision.refusal is not None:
            if decision.refusal.waits:
                return decision.refusal
            raise refusal_error(decision.refusal)
        await self._apply(decision, config, budget_mib(model, config.models[model], observed))
        await self._measure(model, config)
        now = self.clock()
        ttl = waiter.ttl_s if waiter.ttl_s is not None else self.default_ttl_s(model)
        lease = Lease(self._new_id(), model, acquired_at=now, expires_at=now + ttl, ttl_s=ttl)
        self._leases[lease.id] = lease
        await self._save(lease)
        manager.touch(model)
        return lease

    # ---------------------------------------------------------------- applying a grant

    async def _apply(self, decision: LeaseDecision, config: StacksConfig, need_mib: int) -> None:
        """The stops and the start as one plan through the executor: a failed start undoes the
        evictions. After a stop the start waits until NVML shows the room back."""
        manager = self.manager
        stopped = bool(decision.evicted)
        hook_error: list[StackdError] = []

        async def before(step: Any) -> None:
            if stopped and isinstance(step, StartContainer | StartProcess):
                try:
                    await self._await_memory_back(step.model, need_mib, decision.evicted)
                except StackdError as exc:
                    hook_error.append(exc)
                    raise

        assert manager.active_stack is not None
        plan = Plan(
            stack=manager.active_stack,
            steps=decision.steps,
            vram=None,
            ram=RamLedger(0, 0, 0, 0, 0),
            feasible=True,
        )
        executor = PlanExecutor(
            config,
            manager.containers,
            manager.processes,
            manager.ollama,
            manager.remotes,
            manager.live_roles,
            EventLog(f"lease-{decision.model}", manager.wall_clock),
            _no_journal,
            before_step=before,
        )
        execution = await executor.run(plan)
        if not execution.ok:
            if hook_error:
                raise hook_error[0]
            raise DriverFailed(execution.failure_sentence(None))

    async def _await_memory_back(self, model: str, need_mib: int, evicted: tuple[str, ...]) -> None:
        """Wait (bounded by ``release_wait_s``) until the card shows ``need_mib`` free; else refuse
        naming what still holds it. A stopped engine's memory can take a moment to come back."""
        deadline = self.clock() + self.release_wait_s
        device_index = self.manager.config.gpu.device
        while True:
            device = (await self.manager.read_hardware()).gpu(device_index)
            if device is None or device.free_mib >= need_mib:
                return
            if self.clock() >= deadline:
                top = sorted(device.processes, key=lambda p: p.used_mib, reverse=True)[:3]
                holders = ", ".join(f"{p.name} (pid {p.pid}) {gib(p.used_mib)}" for p in top) or "unknown"
                raise LeaseUnavailable(
                    f"{model} needs {gib(need_mib)} but GPU {device_index} shows {gib(device.free_mib)} free "
                    f"{self.release_wait_s:g} s after stopping {', '.join(evicted)}; still holding memory: "
                    f"{holders}",
                    code="memory_not_back",
                    retry_after_s=self.poll_s,
                )
            await self._sleep(min(0.5, self.release_wait_s))

    def measure_later(self, model: str) -> None:
        """Measure a member that a switch started (the manager's ``on_started``), in the background."""
        spec = self.manager.config.models.get(model)
        if self._journal is None or spec is None or spec.placement != Placement.gpu:
            return
        task = asyncio.create_task(self._measure_quietly(model), name=f"stackd-measure-{model}")
        self._measuring.add(task)
        task.add_done_callback(self._measuring.discard)

    async def _measure_quietly(self, model: str) -> None:
        try:
            await self._measure(model, self.manager.config)
        except Exception:  # a measurement is a nicety; the declared size still budgets the member
            log.exception("measuring the GPU footprint of %s failed", model)

    async def _measure(self, model: str, config: StacksConfig) -> None:
        """Remember what the ready member holds on the card (NVML per process through its PIDs)."""
        if self._journal is None:
            return
        spec = config.models[model]
        pids: tuple[int, ...] = ()
        if spec.process is not None:
            info = next((p for p in self.manager.processes.processes() if p.model == model), None)
            pids = info.pids if info is not None else ()
        elif spec.docker is not None and self._container_pids is not None:
            try:
                pids = await self._container_pids(model, spec)
            except StackdError:
                return  # a measurement is a nicety: the declared size still budgets it
        device = (await self.manager.read_hardware()).gpu(config.gpu.device)
        if device is None or not pids:
            return
        used = {p.pid: p.used_mib for p in device.processes}
        mib = sum(used[pid] for pid in pids if pid in used)
        if mib > 0:
            await asyncio.to_thread(self._journal.record_footprint, model, footprint_digest(spec), mib)

    # ---------------------------------------------------------------- live leases

    async def renew(self, lease_id: str, ttl_s: float | None = None) -> Lease:
        """Extend a live lease to ``now + ttl_s`` (default: its own TTL). ``NotFound`` once it ended."""
        lease = self._get(lease_id)
        ttl = ttl_s if ttl_s is not None else lease.ttl_s
        renewed = replace(lease, expires_at=self.clock() + ttl, ttl_s=ttl)
        self._leases[lease_id] = renewed
        await self._save(renewed)
        self.manager.touch(lease.model)
        return renewed

    async def release(self, lease_id: str) -> Lease:
        """End a lease. The model keeps running (its idle TTL counts from now) unless a waiter
        needs its room: the queue is woken."""
        lease = self._get(lease_id)
        await self._end(lease_id)
        return lease

    async def _end(self, lease_id: str) -> None:
        lease = self._leases.pop(lease_id, None)
        if self._journal is not None:
            await asyncio.to_thread(self._journal.delete_lease, lease_id)
        if lease is not None:
            self.manager.touch(lease.model)
        if self._queue:
            self._kick()

    async def _save(self, lease: Lease) -> None:
        if self._journal is not None:
            row = LeaseRow(lease.id, lease.model, lease.acquired_at, lease.expires_at, lease.ttl_s)
            await asyncio.to_thread(self._journal.save_lease, row)

    def live(self) -> list[Lease]:
        """The live leases, oldest first. Drops those expired or on models the active stack lacks
        (their journal rows go at the next restore)."""
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

    def queue(self) -> list[dict[str, Any]]:
        """The waiters, head first, each with why it waits."""
        now = self.clock()
        out = []
        head = self._queue[0] if self._queue else None
        for position, waiter in enumerate(w for w in self._queue if not w.future.done()):
            if waiter.refusal is not None:
                reason = waiting_reason(waiter.refusal, now)
            elif waiter is head:
                reason = "being decided"
            else:
                reason = f"behind {position} earlier request{'s' if position > 1 else ''} (first: {head.model if head else '?'})"
            out.append(
                {
                    "id": waiter.id,
                    "model": waiter.model,
                    "position": position,
                    "waited_s": round(now - waiter.enqueued_at, 3),
                    "deadline_in_s": round(max(waiter.deadline - now, 0.0), 3),
                    "reason": reason,
                }
            )
        return out

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

    async def aclose(self) -> None:
        """Stop the pump; waiters still queued are cancelled."""
        for measuring in list(self._measuring):
            measuring.cancel()
        await asyncio.gather(*self._measuring, return_exceptions=True)
        task, self._pump_task = self._pump_task, None
        for waiter in self._queue:
            waiter.future.cancel()
        self._queue.clear()
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _get(self, lease_id: str) -> Lease:
        live = {lease.id: lease for lease in self.live()}
        if lease_id not in live:
            raise NotFound(
                f"no live lease '{lease_id}' (it expired, was released, or its model left the active stack)"
            )
        return live[lease_id]

    def _refuse_by_config(self, model: str) -> None:
        decision = config_refusal(self.manager.config, self.manager.active_stack, model)
        if decision is not None and decision.refusal is not None:
            raise refusal_error(decision.refusal)

    def _refuse_during_switch(self, model: str) -> None:
        current = self.manager.current_switch
        if current is not None:
            raise Conflict(
                f"switch {current.id} to '{current.target}' is in progress; lease {model} after it ends",
                switch_id=current.id,
                stack=current.target,
            )
