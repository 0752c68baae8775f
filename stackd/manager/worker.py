"""``SwitchWorker``: the one task that mutates the engines, the one switch slot, the switches kept.

Jobs (switches, recovery, leases' grants, config reloads, idle releases) are taken from a queue
by a single worker task, so no two mutations of the engines ever interleave and nothing needs a
lock (STYLE habit 5). ``reserve`` takes the switch slot *before* its caller's first ``await``; a
second switch while the slot is held gets ``Conflict`` naming the one in progress.

Reads of a switch by id run on the event loop: the store reads on a connection of its own, which
never waits for a writer (WAL), so a read takes microseconds even while a switch journals a step.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from stackd.errors import Conflict, NotFound
from stackd.manager.events import EventLog, SwitchEvent
from stackd.manager.switch import Switch, SwitchKind, journal_view, replay_finished
from stackd.planner.views import JsonObject, SwitchAnswer
from stackd.state.store import StateStore

log = logging.getLogger("stackd.manager")

Job = Callable[[], Awaitable[object]]
T = TypeVar("T")

SUMMARY_KEYS = (
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


class SwitchWorker:
    """The queue and its task, the switch slot, and this run's switches (up to ``keep``)."""

    def __init__(self, store: StateStore, wall_clock: Callable[[], float], keep: int = 50) -> None:
        self.store = store
        self.wall_clock = wall_clock
        self.keep = keep
        self.switches: dict[str, Switch] = {}
        self.current: Switch | None = None
        self.last: Switch | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- the switch slot

    def reserve(
        self, target: str, from_stack: str | None, switch_id: str | None = None, kind: SwitchKind = "switch"
    ) -> Switch:
        """Take the one switch slot, or raise ``Conflict`` naming its holder. Never awaits."""
        current = self.current
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
            log=EventLog(
                switch_id, self.wall_clock, f"to '{target}' from '{from_stack or '(none)'}' ({kind})"
            ),
            kind=kind,
            started_at=self.wall_clock(),
        )
        self.current = switch
        return switch

    def release(self, switch: Switch) -> None:
        if self.current is switch:
            self.current = None
        self.last = switch

    def remember(self, switch: Switch) -> None:
        self.switches[switch.id] = switch
        while len(self.switches) > self.keep:
            oldest = next(iter(self.switches))
            if self.switches[oldest].in_progress:
                break
            del self.switches[oldest]

    # ---------------------------------------------------------------- the queue and its task

    def enqueue(self, job: Job) -> None:
        """Queue ``job``; what it raises is logged (``run_exclusive`` hands it to its caller)."""
        if self._task is None or self._task.done() or self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._work(self._queue), name="stackd-switch-worker")
        self._queue.put_nowait(job)

    async def run_exclusive(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``job`` on the worker, after whatever is queued before it, and return its result."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        async def settle() -> None:
            try:
                result = await job()
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
                return
            except BaseException:
                if not done.done():
                    done.cancel()
                raise
            if not done.done():
                done.set_result(result)

        self.enqueue(settle)
        return await done

    async def _work(self, queue: asyncio.Queue[Job]) -> None:
        while True:
            job = await queue.get()
            try:
                await job()
            except Exception:
                log.exception("switch worker job failed")

    async def aclose(self) -> None:
        """Stop the task. A switch in flight is cut short; its journal entry stays open and the
        next start recovers it."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    # ---------------------------------------------------------------- switches, live or journalled

    def get_switch(self, switch_id: str) -> SwitchAnswer:
        """A switch of this run (live state) or of an earlier one (from the journal)."""
        switch = self.switches.get(switch_id)
        if switch is not None:
            return switch.view()
        entry = self.store.get_switch(switch_id)  # the store's reader: microseconds, never waits on a write
        if entry is None:
            raise NotFound(f"no switch with id '{switch_id}'")
        return journal_view(entry)

    def events(self, switch_id: str) -> AsyncIterator[SwitchEvent]:
        """Async iterator of the switch's events: every past one, then live ones until it ends.

        Raises ``NotFound`` here, before iteration, so that the API can answer 404 instead of
        opening a stream."""
        switch = self.switches.get(switch_id)
        if switch is not None:
            return switch.log.follow()
        entry = self.store.get_switch(switch_id)
        if entry is None:
            raise NotFound(f"no switch with id '{switch_id}'")
        return replay_finished(entry)

    def recent(self, limit: int = 10) -> list[JsonObject]:
        """Up to ``limit`` switches, newest first: this run's (live, with their events), then
        the journal's of earlier runs (their steps done, no events: those were not persisted)."""
        recent = [s.view().to_json() for s in reversed(self.switches.values())][:limit]
        seen = {s["switch_id"] for s in recent}
        for entry in self.store.history(limit):  # the store's reader: microseconds
            if len(recent) >= limit:
                break
            journal = self.store.get_switch(entry.switch_id) if entry.switch_id not in seen else None
            if journal is not None:
                recent.append(journal_view(journal).to_json())
        return recent

    def last_summary(self) -> JsonObject | None:
        """The last switch of this run, or else the newest of the history (an earlier run)."""
        if self.last is not None:
            d = self.last.view().to_json()
            return {k: d.get(k) for k in SUMMARY_KEYS}
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
