"""Group commit of the calls' usage rows: a call is answered only once its rows are in SQLite.

Each call hands its rows (one per strategy and backend it tried, stamped with its request id)
to ``commit``. When no batch is waiting in the writer thread, the rows of the calls that
commit in one turn of the event loop are committed together in its next turn, on the loop,
if SQLite can take the write at once: an append of a few hundred bytes to the WAL file
(no fsync, no checkpoint, no lock wait: ``UsageStore.write_now``), far cheaper than a thread's
round trip, which cost a lone call ~0.2 ms (docs/benchmarks.md). Otherwise the call waits: one
writer task takes every row waiting, writes them in one transaction in a worker thread, then
releases all their calls at once; the calls that arrive meanwhile form the next batch. The
event loop never waits on SQLite: a write that would wait goes to the thread, and the WAL is
checkpointed there, every ``CHECKPOINT_EVERY`` commits (neither path checkpoints by itself).

Durability: the usage table is written with ``synchronous=NORMAL`` in WAL mode, so a committed
row is in the WAL file (the OS holds it) before the call is answered: it survives the daemon's
SIGKILL, OOM kill or crash. A power cut may lose the last transactions (``synchronous=FULL``
would fsync each batch; the usage ledger is a tally, see ``stackd.state.sqlite``).

A write that fails (disk full, a locked database past the busy timeout) is logged and the
calls are released anyway: the ledger records the product's work, it is not the product.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from stackd.state.usage import UsageRow, UsageStore

log = logging.getLogger("stackd.router")
# A checkpoint moves the WAL into the database; 1,000 small commits is ~1,000 WAL pages, the size
# at which SQLite's own automatic checkpoint would have run (inside a commit, on the loop).
CHECKPOINT_EVERY = 1000


class UsageLedger:
    def __init__(self, store: UsageStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._waiting: list[tuple[Sequence[UsageRow], asyncio.Future[None] | None]] = []
        self._turn: list[tuple[Sequence[UsageRow], asyncio.Future[None] | None]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._since_checkpoint = 0  # commits since the last checkpoint
        self._checkpoints: set[asyncio.Task[None]] = set()  # held: a task nobody holds may be collected

    async def commit(self, rows: Sequence[UsageRow]) -> None:
        """Return once ``rows`` are committed (with whatever other calls handed in meanwhile)."""
        if not rows:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._closed or self._waiting:  # a batch is forming in the writer thread: join it
            self._hand_in(rows, future)
        else:
            # The calls that reach here in this turn of the loop commit together, in its next
            # turn: one transaction for a burst, and at rest one for a lone call.
            if not self._turn:
                loop.call_soon(self._commit_turn)
            self._turn.append((rows, future))
        # a caller that goes away (cancelled) leaves its rows in the batch: they are written
        await future

    def _commit_turn(self) -> None:
        """This turn's rows: on the event loop when SQLite takes them without waiting, else to
        the writer thread."""
        batch, self._turn = self._turn, []
        if not self._waiting and self._write_now([row for rows, _ in batch for row in rows]):
            for _, future in batch:
                if future is not None and not future.done():  # done: its caller was cancelled
                    future.set_result(None)
            return
        for rows, future in batch:
            self._hand_in(rows, future)

    def submit(self, rows: Sequence[UsageRow]) -> None:
        """Hand rows in without waiting (a stream its caller closed: nothing more is answered)."""
        if rows:
            self._hand_in(rows, None)

    def _hand_in(self, rows: Sequence[UsageRow], future: asyncio.Future[None] | None) -> None:
        if self._closed:  # after aclose (a call that outlived the shutdown): write it now
            self._write(list(rows))
            if future is not None:
                future.set_result(None)
            return
        self._waiting.append((rows, future))
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(self._wake))
        self._wake.set()

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            await self._write_waiting()

    async def _write_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        rows = [row for rows, _ in batch for row in rows]
        try:
            await asyncio.to_thread(self._write, rows)
        finally:
            for _, future in batch:
                if future is not None and not future.done():  # done: its caller was cancelled
                    future.set_result(None)
        self._committed()

    def _write_now(self, rows: Sequence[UsageRow]) -> bool:
        """Commit ``rows`` on the event loop if SQLite takes them without waiting; else False."""
        try:
            if not self._store.write_now(self._clock(), rows):
                return False
        except Exception as exc:
            log.error("usage ledger: %d rows not written: %s", len(rows), exc)
            return True  # as ``_write``: the call is released anyway
        self._committed()
        return True

    def _committed(self) -> None:
        """One more commit, on the loop or in the thread: neither checkpoints by itself
        (``wal_autocheckpoint=0``), so every ``CHECKPOINT_EVERY`` commits one runs in a thread."""
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            task = asyncio.get_running_loop().create_task(self._checkpoint())
            self._checkpoints.add(task)
            task.add_done_callback(self._checkpoints.discard)

    async def _checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self._store.checkpoint)
        except Exception as exc:  # the WAL grows until the next one; nothing is lost
            log.warning("usage ledger: WAL checkpoint failed: %s", exc)

    def _write(self, rows: list[UsageRow]) -> None:
        try:
            self._store.write(self._clock(), rows)
        except Exception as exc:
            log.error("usage ledger: %d rows not written: %s", len(rows), exc)

    async def aclose(self) -> None:
        """Write what is waiting and stop the writer. Idempotent."""
        turn, self._turn = self._turn, []  # their turn has not come: the writer takes them
        self._waiting.extend(turn)
        if self._checkpoints:
            await asyncio.gather(*self._checkpoints, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._write_waiting()
        self._closed = True
