"""The router's usage ledger in SQLite (table ``usage`` of the state dir's ``stackd.db``).

One row per call and (strategy, backend) it tried, stamped with the call's request id: the
router records a call's rows before it answers it (``record``: an append to the journal,
``stackd.state.usage_journal``), so an answered call is in the ledger even if the daemon is
SIGKILLed the next moment; ``drain`` moves what was recorded into SQLite in one transaction, and
the store replays what a kill left in the journal when it opens. Rows written
by an older stackd (one per second and pair) have no request id. ``summary(since)`` feeds
``stackd usage`` and ``/usage``; ``slice_tokens(since)`` the slices' daily budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from stackd.state.sqlite import add_missing_columns, open_reader, open_writer
from stackd.state.usage_journal import DRAINED_TABLE, Record, UsageJournal, encode

# The router's failure kinds (stackd.router.types.FailureKind; a unit test keeps them equal).
FAILURE_KINDS = ("refused", "timeout", "http_5xx", "http_4xx", "malformed", "stream_cut", "empty")
FAILURE_COLUMNS = tuple(f"fail_{k}" for k in FAILURE_KINDS)


class UsageRow(NamedTuple):
    """What one (strategy, backend) pair did in one call (rows of an older stackd: in one second).
    A named tuple, not a frozen dataclass: one is built for every call, and a frozen dataclass
    sets each of its 16 fields through ``object.__setattr__``."""

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
    request_id TEXT,
    key TEXT
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
    "key": "TEXT",
}

_COLUMNS = ", ".join(
    (
        "ts, strategy, backend, requests, answered, skipped",
        *FAILURE_COLUMNS,
        "first_token_ms_sum, first_token_count, total_ms_sum, total_count",
        "prompt_tokens, completion_tokens, cost_usd, tokens_estimated, tokens_unknown, request_id, key",
    )
)
_WIDTH = _COLUMNS.count(",") + 1


def usage_table(db: sqlite3.Connection) -> None:
    """Create ``usage``, or add the columns an older stackd's lacks (the key store reads it too)."""
    db.executescript(_SCHEMA)
    add_missing_columns(db, "usage", _ADDED_COLUMNS)


class UsageStore:
    """Thread-safe. ``record`` is the event loop's (a journal append, no SQLite); ``drain``
    moves what was recorded into SQLite in one transaction, in a thread (the ledger schedules
    it) or before a read. Reads use a connection of their own (WAL: they never wait for a
    write), so ``GET /usage`` may call them on the event loop."""

    def __init__(self, db_path: Path, also: Mapping[str, str] | None = None, also_schema: str = "") -> None:
        """``also``: the tables a subclass records beside ``usage`` (name -> its columns, in its
        records' order), created by ``also_schema``. The journal a crash left is replayed here."""
        self._lock = threading.Lock()  # the writer connection: held for a whole transaction
        self._db = open_writer(db_path, DRAINED_TABLE + also_schema, durable=False)
        usage_table(self._db)
        self._read_lock = threading.Lock()
        self._reader = open_reader(db_path)
        self._columns: dict[str, str] = {"usage": _COLUMNS, **(also or {})}
        self._journal = UsageJournal(db_path)
        self._pending: list[Record] = []  # recorded, not yet taken by a drain
        self._journaled = threading.Lock()  # ``_pending`` and the journal's generation, in step
        self.replayed = self._replay()

    def _replay(self) -> int:
        """Put the records a crash left in the journal into the tables; how many there were."""
        with self._lock:
            drained = self._drained()
            records: list[Record] = []
            last = drained
            for generation, path in self._journal.files():
                if drained < generation < self._journal.generation:
                    records.extend(_widened(record) for record in self._journal.read(path))
                    last = generation
            if last > drained:
                self._transaction(records, last)
        self._journal.remove_through(self._journal.generation - 1)
        return len(records)

    def record(self, ts: float, usage: Sequence[UsageRow]) -> Callable[[], None]:
        """Append ``usage`` (stamped ``ts``, each row with the key of its call, ``_keys_of``) to the
        journal: when this returns the rows survive the process's death, and ``drain`` puts them
        in SQLite. What to do now that they are recorded (``_told``). Raises ``OSError``."""
        if not usage:
            return _nothing
        keys = self._keys_of(usage)
        records: list[Record] = [("usage", values) for values in _values(ts, usage, keys)]
        data = encode(records)
        with self._journaled:
            self._journal.append(data)
            self._pending.extend(records)
        return self._told(usage, keys)

    def write(self, ts: float, usage: Sequence[UsageRow]) -> None:
        """``record`` then ``drain``: the rows are in SQLite when this returns."""
        self.record(ts, usage)()
        self.drain()

    def drain(self, wait: bool = True) -> bool:
        """What was recorded into SQLite, in one transaction that also marks its journal
        generations drained, then their files deleted. ``wait=False``: only if no other
        transaction holds the writer (a read's catch-up on the event loop); False if one did."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            with self._journaled:
                if not self._pending:
                    return True
                records, self._pending = self._pending, []
                # every record appended so far is in a file up to this one; a failed drain's
                # records are back in ``_pending``, so marking this one drained covers theirs too
                last = self._journal.rotate()
            try:
                self._transaction(records, last)
            except BaseException:
                with self._journaled:  # kept, in order: the next drain writes them with its own
                    self._pending[:0] = records
                raise
        finally:
            self._lock.release()
        self._journal.remove_through(last)
        return True

    def _transaction(self, records: list[Record], generation: int) -> None:
        """``records`` and the drained mark, in one transaction on the writer (lock held)."""
        by_table: dict[str, list[tuple[object, ...]]] = {}
        for table, values in records:
            by_table.setdefault(table, []).append(values)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, rows in by_table.items():
                columns = self._columns.get(table)
                if columns is None:  # a journal of a newer stackd: its rows are not this one's
                    continue
                insert_rows(db, table, columns, rows)
            db.execute("INSERT OR REPLACE INTO usage_journal (id, drained) VALUES (1, ?)", (generation,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT (a full disk) too: the next BEGIN must not fail
                db.execute("ROLLBACK")
            raise

    def _drained(self) -> int:
        row = self._db.execute("SELECT drained FROM usage_journal WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def _keys_of(self, usage: Sequence[UsageRow]) -> Sequence[str | None]:
        """The API key of each row's call (a subclass knows them; none here)."""
        return (None,) * len(usage)

    def _told(self, usage: Sequence[UsageRow], keys: Sequence[str | None]) -> Callable[[], None]:
        """What to run once ``usage`` is recorded (a subclass tells its listeners; nothing here)."""
        return _nothing

    def catch_up(self) -> None:
        """Before a read: what was recorded into SQLite, unless a transaction holds the writer
        (then the read sees what was drained; the event loop never waits for a write)."""
        if self._pending:
            # a drain that fails (a full disk) keeps its rows for the next: the read goes on
            with contextlib.suppress(sqlite3.Error, OSError):
                self.drain(wait=False)

    def strategy_tokens(self, prefix: str, since: float) -> dict[str, int]:
        """Tokens counted per strategy whose name starts with ``prefix`` since ``since``: the
        slices' spending of the day (their strategies are ``preset:<preset>:<slice>``)."""
        query = (
            "SELECT strategy, SUM(prompt_tokens + completion_tokens) FROM usage "
            "WHERE ts >= ? AND substr(strategy, 1, ?) = ? GROUP BY strategy"
        )
        self.catch_up()
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
        self.catch_up()
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
        self.catch_up()
        with self._read_lock:
            raw = self._reader.execute(query, (since or 0.0,)).fetchall()
        return [_summary_row(row) for row in raw]

    def close(self) -> None:
        """Drain what was recorded, then close (a drain that fails leaves it in the journal)."""
        try:
            self.drain()
        finally:
            self._journal.close()
            with self._read_lock:
                self._reader.close()
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


ROWS_PER_INSERT = 200  # the GIL is held while a statement's values are bound: ~0.3 ms for this many


def insert_rows(db: sqlite3.Connection, table: str, columns: str, rows: list[tuple[object, ...]]) -> None:
    """``rows`` into ``table`` as multi-row INSERTs of ``ROWS_PER_INSERT`` rows, not
    ``executemany``: that steps each row apart and hands the GIL back and forth with the event
    loop's thread at each (about 50 µs of CPU per row at 3,000 calls a second, docs/benchmarks.md).
    Not larger either: binding one statement's values holds the GIL, and the event loop waits."""
    width = columns.count(",") + 1
    per_statement = max(1, min(ROWS_PER_INSERT, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    one = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = [value for row in chunk for value in row]
        db.execute(f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * len(chunk))}", values)


NO_FAILURES = (0,) * len(FAILURE_KINDS)  # most rows: built once, not per row


def _widened(record: Record) -> Record:
    """A replayed record; a ``usage`` row of an older stackd's journal lacks the columns added
    since (``key``): they are NULL. Only a replay meets one: this stackd writes them whole."""
    table, values = record
    if table != "usage" or len(values) >= _WIDTH:
        return record
    return table, (*values, *(None,) * (_WIDTH - len(values)))


def _failure_counts(failures: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(failures.get(k, 0) for k in FAILURE_KINDS)


def _values(ts: float, usage: Sequence[UsageRow], keys: Sequence[str | None]) -> list[tuple[object, ...]]:
    """The table's row of each ``UsageRow``, stamped ``ts``, with its call's key: the row's fields
    in order, its failures as one count per kind (``_COLUMNS`` and ``UsageRow`` list them in the
    same order)."""
    return [
        (ts, *r[:5], *(_failure_counts(r.failures) if r.failures else NO_FAILURES), *r[6:], key)
        for r, key in zip(usage, keys, strict=True)
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
