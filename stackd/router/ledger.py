"""The usage ledger: a call is answered only once its rows are recorded, and they reach SQLite in batches.

Each call hands its rows (one per strategy and backend it tried, stamped with its request id) to
``record`` before it is answered: ``UsageStore.record`` appends them to the store's journal, a
copy into a shared memory mapping on the event loop (a few microseconds; a SQLite transaction
per call cost ~60-90 µs of the loop's CPU, docs/benchmarks.md). A drain then moves everything recorded into SQLite in
one transaction, in a worker thread, ``DRAIN_AFTER_S`` after the first row that waits (at once
past ``DRAIN_ROWS`` rows), and a read of the ledger catches up first (``UsageStore.catch_up``).
The event loop never waits on SQLite.

Durability: a recorded row is in the journal file (the kernel holds it) before the call is
answered, so it survives the daemon's SIGKILL, OOM kill or crash: the store replays the journal
into SQLite when it next opens. A power cut may lose the last rows (as the ``synchronous=NORMAL``
commit this replaced could; the usage ledger is a tally, see ``stackd.state.sqlite``).

A record or a drain that fails (a full disk) is logged and the calls are answered anyway: the
ledger records the product's work, it is not the product. A failed drain leaves its rows in the
journal and in memory; the next drain writes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from stackd.state.usage import UsageRow, UsageStore

log = logging.getLogger("stackd.router")
DRAIN_AFTER_S = 1.0  # the longest a recorded row waits for SQLite (a read catches up at once)
DRAIN_ROWS = 5000  # a busier second drains sooner: one transaction stays small


class UsageLedger:
    def __init__(self, store: UsageStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._draining: asyncio.Task[None] | None = None
        self._waiting = 0  # rows recorded since the last drain began
        self._closed = False

    def record(self, rows: Sequence[UsageRow]) -> None:
        """``rows`` into the journal: when this returns they survive the daemon's death."""
        if not rows:
            return
        try:
            after = self._store.record(self._clock(), rows)
        except Exception as exc:
            log.error("usage ledger: %d rows not recorded: %s", len(rows), exc)
            return
        after()
        if self._closed:  # a call that outlived the shutdown: nothing will drain it later
            self._drain()
            return
        self._waiting += len(rows)
        if self._draining is not None:
            return  # the drain's end schedules the next
        if self._waiting >= DRAIN_ROWS:
            self._start_drain()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(DRAIN_AFTER_S, self._start_drain)

    def _start_drain(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting = 0
        self._draining = asyncio.get_running_loop().create_task(self._drain_in_thread())

    async def _drain_in_thread(self) -> None:
        try:
            await asyncio.to_thread(self._drain)
        finally:
            self._draining = None
        if self._waiting and not self._closed and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(DRAIN_AFTER_S, self._start_drain)

    def _drain(self) -> None:
        try:
            self._store.drain()
        except Exception as exc:  # kept in the journal and in memory: the next drain writes them
            log.error("usage ledger: rows not yet in SQLite (kept in the journal): %s", exc)

    async def aclose(self) -> None:
        """Drain what was recorded and stop. Idempotent."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._draining is not None:
            await asyncio.gather(self._draining, return_exceptions=True)
        await asyncio.to_thread(self._drain)
