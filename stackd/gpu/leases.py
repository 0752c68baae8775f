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

A grant runs through ``stackd.gpu.grant`` (the executor, the NVML wait, the footprint); leases
are journalled in the state store, so a restarted daemon restores its live leases.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from stackd.errors import Conflict, DriverUnavailable, NotFound, StackdError
from stackd.gpu.decide import (
    Lease,
    LeaseRefusal,
    config_refusal,
    decide_lease,
    gpu_room,
    leasable,
    retry_after,
    swap_group,
    waiting_reason,
)
from stackd.gpu.grant import FootprintMeter, Grants, Sleep
from stackd.gpu.refusals import LeaseRefused, LeaseUnavailable, refusal_error
from stackd.manager.observe import with_measurements
from stackd.planner.footprints import budget_mib
from stackd.planner.views import redact_url
from stackd.state.gpu import GpuJournal, LeaseRow

if TYPE_CHECKING:
    from stackd.manager.seams import Effects

__all__ = [
    "Lease",
    "LeaseCoordinator",
    "LeaseRefused",
    "LeaseUnavailable",
    "decide_lease",
    "leasable",
    "swap_group",
]

DEFAULT_TTL_S = 600.0  # a lease on a model without idle_ttl_s
MAX_WAITERS = 64


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


class LeaseCoordinator:
    """The daemon's leases. Build once with the manager.

    ``clock`` (Unix seconds: a lease's expiry is shown to people and journalled) times expiry and
    deadlines; ``sleep`` is how the pump waits (tests inject one that moves a fake clock);
    ``journal`` keeps leases across restarts; ``meter`` measures a granted member's footprint
    (None: nothing is measured); ``poll_s`` is how often a waiting
    head is tried again when nothing wakes it; ``release_wait_s`` bounds the wait for NVML to
    show a stopped member's memory back.
    """

    def __init__(
        self,
        manager: Effects,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
        journal: GpuJournal | None = None,
        meter: FootprintMeter | None = None,
        sleep: Sleep = asyncio.sleep,
        poll_s: float = 2.0,
        release_wait_s: float = 30.0,
    ) -> None:
        self.manager = manager
        self.clock = clock
        self._new_id = new_id
        self._journal = journal
        self._meter = meter
        self._sleep = sleep
        self.poll_s = poll_s
        self.release_wait_s = release_wait_s
        self._leases: dict[str, Lease] = {}
        self._queue: deque[Waiter] = deque()
        self._waiter_ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._grants = Grants(manager, clock, sleep, release_wait_s, poll_s)
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
        await self._grants.apply(decision, config, budget_mib(model, config.models[model], observed))
        if self._meter is not None:
            await self._meter.measure(model, config)
        now = self.clock()
        ttl = waiter.ttl_s if waiter.ttl_s is not None else self.default_ttl_s(model)
        lease = Lease(self._new_id(), model, acquired_at=now, expires_at=now + ttl, ttl_s=ttl)
        self._leases[lease.id] = lease
        await self._save(lease)
        manager.touch(model)
        return lease

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

    def queue(self) -> list[dict[str, object]]:
        """The waiters, head first, each with why it waits."""
        now = self.clock()
        out: list[dict[str, object]] = []
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

    def to_json(self, lease: Lease) -> dict[str, object]:
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
        if self._meter is not None:
            await self._meter.aclose()
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
