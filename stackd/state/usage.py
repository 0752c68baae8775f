"""The router's usage ledger in SQLite (table ``usage`` of the state dir's ``stackd.db``).

One row per call and (strategy, backend) it tried, stamped with the call's request id: the
router commits a call's rows before it answers it (group commit, ``stackd.router.ledger``), so
an answered call is in the ledger even if the daemon is SIGKILLed the next moment. Rows written
by an older stackd (one per second and pair) have no request id. ``summary(since)`` feeds
``stackd usage`` and ``/usage``; ``slice_tokens(since)`` the slices' daily budgets.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from stackd.state.sqlite import BUSY_TIMEOUT_MS, add_missing_columns, open_reader, open_writer

# The router's failure kinds (stackd.router.types.FailureKind; a unit test keeps them equal).
FAILURE_KINDS = ("refused", "timeout", "http_5xx", "http_4xx", "malformed", "stream_cut", "empty")
FAILURE_COLUMNS = tuple(f"fail_{k}" for k in FAILURE_KINDS)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What one (strategy, backend) pair did during one flush interval."""

    strategy: str
    backend: str
    requests: int
    answered: int
    skipped: int
    failures: Mapping[str, int]
    first_token_ms_sum: float
    first_token_count: int
    total_ms_sum: float
    total_count: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    tokens_estimated: int = 0  # answers whose figures are partly stackd's count
    tokens_unknown: int = 0  # answers with a figure nobody could count (left out of the sums)
    request_id: str | None = None  # the call's (X-Request-ID)


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS usage (
    ts REAL NOT NULL,
    strategy TEXT NOT NULL,
    backend TEXT NOT NULL,
    requests INTEGER NOT NULL,
    answered INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in FAILURE_COLUMNS)},
    first_token_ms_sum REAL NOT NULL,
    first_token_count INTEGER NOT NULL,
    total_ms_sum REAL NOT NULL,
    total_count INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    tokens_estimated INTEGER NOT NULL DEFAULT 0,
    tokens_unknown INTEGER NOT NULL DEFAULT 0,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
"""
# Columns added since the table's first form, added to an older stackd.db on open (a failure
# kind added later is one of them).
_ADDED_COLUMNS = {
    **dict.fromkeys(FAILURE_COLUMNS, "INTEGER NOT NULL DEFAULT 0"),
    "tokens_estimated": "INTEGER NOT NULL DEFAULT 0",
    "tokens_unknown": "INTEGER NOT NULL DEFAULT 0",
    "request_id": "TEXT",
}

_COLUMNS = ", ".join(
    (
        "ts, strategy, backend, requests, answered, skipped",
        *FAILURE_COLUMNS,
        "first_token_ms_sum, first_token_count, total_ms_sum, total_count",
        "prompt_tokens, completion_tokens, cost_usd, tokens_estimated, tokens_unknown, request_id",
    )
)


class UsageStore:
    """Synchronous and thread-safe; the router calls ``write`` through ``asyncio.to_thread``.
    ``summary`` reads on a connection of its own (WAL: it never waits for a write's fsync), so
    ``GET /usage`` may call it on the event loop."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_writer(db_path, _SCHEMA, durable=False)
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # never in a commit: ``checkpoint`` does it
        add_missing_columns(self._db, "usage", _ADDED_COLUMNS)
        self._read_lock = threading.Lock()
        self._reader = open_reader(db_path)
        # Checkpoints on a connection of their own: a PASSIVE one runs beside the writer's
        # commits instead of holding the writer's lock for its copy and fsync.
        self._checkpoint_lock = threading.Lock()
        self._checkpointer = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._checkpointer.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # The event loop's writes (``write_now``): a writer that never waits for a lock.
        self._now_lock = threading.Lock()
        self._now = open_writer(db_path, _SCHEMA, durable=False)
        self._now.execute("PRAGMA busy_timeout=0")
        self._now.execute("PRAGMA wal_autocheckpoint=0")

    def write(self, ts: float, usage: Sequence[UsageRow]) -> None:
        """One transaction with one row per ``UsageRow``, stamped ``ts`` (epoch seconds)."""
        rows = _values(ts, usage)
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            after = self._insert(self._db, ts, usage, rows)
        after()

    def write_now(self, ts: float, usage: Sequence[UsageRow]) -> bool:
        """``write``, on the condition that nothing makes it wait: SQLite's write lock is taken
        at once, on a connection of its own whose busy timeout is 0. False, with nothing written,
        when it would have waited: the caller then writes through ``write`` in a thread. The WAL
        is never checkpointed here (``checkpoint`` does it): what remains is a small append to
        the WAL file, which the event loop may afford (docs/benchmarks.md)."""
        rows = _values(ts, usage)
        if not rows:
            return True
        if not self._now_lock.acquire(blocking=False):
            return False
        try:
            try:
                self._now.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # another connection writes: "database is locked"
                return False
            after = self._insert(self._now, ts, usage, rows)
        finally:
            self._now_lock.release()
        after()
        return True

    def _insert(
        self, db: sqlite3.Connection, ts: float, usage: Sequence[UsageRow], rows: list[tuple[object, ...]]
    ) -> Callable[[], None]:
        """Inside the transaction the caller began on ``db``: insert, what ``_also_write`` adds,
        commit. What to do once committed (``_also_write``'s)."""
        marks = ", ".join("?" * len(rows[0]))
        try:
            db.executemany(f"INSERT INTO usage ({_COLUMNS}) VALUES ({marks})", rows)
            after = self._also_write(db, ts, usage)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT (a full disk) too: the next BEGIN must not fail
                db.execute("ROLLBACK")
            raise
        return after

    def _also_write(self, db: sqlite3.Connection, ts: float, usage: Sequence[UsageRow]) -> Callable[[], None]:
        """What a subclass writes in the same transaction as the rows (nothing here); the
        callable it returns runs once they are committed."""
        return _nothing

    def writers(self) -> tuple[sqlite3.Connection, ...]:
        """The connections that write (a subclass applies its schema through them)."""
        return (self._db, self._now)

    def checkpoint(self) -> tuple[int, int]:
        """Move the WAL's pages into the database (PASSIVE: it waits for no reader), in the
        caller's thread: the writer's own commits never do it (``wal_autocheckpoint=0``).
        The WAL's frames, and how many of them are now in the database."""
        with self._checkpoint_lock:
            _busy, frames, moved = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames), int(moved)

    def strategy_tokens(self, prefix: str, since: float) -> dict[str, int]:
        """Tokens counted per strategy whose name starts with ``prefix`` since ``since``: the
        slices' spending of the day (their strategies are ``preset:<preset>:<slice>``)."""
        query = (
            "SELECT strategy, SUM(prompt_tokens + completion_tokens) FROM usage "
            "WHERE ts >= ? AND substr(strategy, 1, ?) = ? GROUP BY strategy"
        )
        with self._read_lock:
            rows = self._reader.execute(query, (since, len(prefix), prefix)).fetchall()
        return {strategy: int(tokens or 0) for strategy, tokens in rows}

    def samples(self, since: float) -> list[tuple[float, str, int, int, float, int, int]]:
        """Each row since ``since`` as ``(ts, backend, requests, failures, total_ms_sum,
        total_count, completion_tokens)``, oldest first: what ``usage_series`` buckets (one row
        is one call's attempts at one backend, so its mean time is that call's latency there)."""
        failures = " + ".join(FAILURE_COLUMNS)
        query = (
            f"SELECT ts, backend, requests, {failures}, total_ms_sum, total_count, completion_tokens "
            "FROM usage WHERE ts >= ? ORDER BY ts"
        )
        with self._read_lock:
            return [tuple(row) for row in self._reader.execute(query, (since,)).fetchall()]

    def summary(self, since: float | None = None) -> list[UsageSummary]:
        """Totals per (strategy, backend) since ``since`` (epoch seconds; None = all time)."""
        failure_sums = ", ".join(f"SUM({c})" for c in FAILURE_COLUMNS)
        query = (
            "SELECT strategy, backend, SUM(requests), SUM(answered), SUM(skipped), "
            f"{failure_sums}, SUM(first_token_ms_sum), SUM(first_token_count), SUM(total_ms_sum), "
            "SUM(total_count), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd), "
            "SUM(tokens_estimated), SUM(tokens_unknown), MIN(ts), MAX(ts) "
            "FROM usage WHERE ts >= ? GROUP BY strategy, backend ORDER BY strategy, backend"
        )
        with self._read_lock:
            raw = self._reader.execute(query, (since or 0.0,)).fetchall()
        return [_summary_row(row) for row in raw]

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._checkpoint_lock:
            self._checkpointer.close()
        with self._now_lock:
            self._now.close()
        with self._lock:
            self._db.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


class UsageSummary(TypedDict):
    """One (strategy, backend)'s totals, as ``GET /usage`` answers them in ``rows``."""

    strategy: str
    backend: str
    requests: int
    answered: int
    skipped: int
    failures: dict[str, int]  # the kinds that happened only
    mean_first_token_ms: float | None
    mean_total_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    # answers whose figures are partly stackd's count / partly unknown (not summed)
    tokens_estimated: int
    tokens_unknown: int
    cost_usd: float
    first_ts: float
    last_ts: float


def _nothing() -> None:
    pass


def _values(ts: float, usage: Sequence[UsageRow]) -> list[tuple[object, ...]]:
    """The table's row of each ``UsageRow``, stamped ``ts``."""
    return [
        (
            ts,
            r.strategy,
            r.backend,
            r.requests,
            r.answered,
            r.skipped,
            *(r.failures.get(k, 0) for k in FAILURE_KINDS),
            r.first_token_ms_sum,
            r.first_token_count,
            r.total_ms_sum,
            r.total_count,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost_usd,
            r.tokens_estimated,
            r.tokens_unknown,
            r.request_id,
        )
        for r in usage
    ]


def _summary_row(row: Sequence[Any]) -> UsageSummary:  # a SQLite row: its types are the query's
    """A row of ``summary``'s query: the sums, then the means of the sums and counts."""
    strategy, backend, requests, answered, skipped, *rest = row
    n = len(FAILURE_KINDS)
    failures = dict(zip(FAILURE_KINDS, rest[:n], strict=True))
    (ft_sum, ft_count, total_sum, total_count, prompt, completion, cost, estimated, unknown, first, last) = (
        rest[n:]
    )
    return {
        "strategy": strategy,
        "backend": backend,
        "requests": requests,
        "answered": answered,
        "skipped": skipped,
        "failures": {k: v for k, v in failures.items() if v},
        "mean_first_token_ms": round(ft_sum / ft_count, 3) if ft_count else None,
        "mean_total_ms": round(total_sum / total_count, 3) if total_count else None,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "tokens_estimated": estimated,
        "tokens_unknown": unknown,
        "cost_usd": round(cost, 6),
        "first_ts": first,
        "last_ts": last,
    }
