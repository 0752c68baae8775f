"""The router's usage ledger in SQLite (table ``usage`` of the state dir's ``stackd.db``).

One row per (flush interval, strategy, backend) with activity: the router's accounting
aggregates in memory and a background task flushes it about once a second, in a worker thread,
so no request ever waits on SQLite. ``summary(since)`` feeds ``stackd usage`` and ``/usage``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackd.state.sqlite import open_reader, open_writer

# The router's failure kinds (stackd.router.types.FailureKind; a unit test keeps them equal).
FAILURE_KINDS = ("refused", "timeout", "http_5xx", "http_4xx", "malformed", "stream_cut")
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
    cost_usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
"""

_COLUMNS = ", ".join(
    (
        "ts, strategy, backend, requests, answered, skipped",
        *FAILURE_COLUMNS,
        "first_token_ms_sum, first_token_count, total_ms_sum, total_count",
        "prompt_tokens, completion_tokens, cost_usd",
    )
)


class UsageStore:
    """Synchronous and thread-safe; the router calls ``write`` through ``asyncio.to_thread``.
    ``summary`` reads on a connection of its own (WAL: it never waits for a write's fsync), so
    ``GET /usage`` may call it on the event loop."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_writer(db_path, _SCHEMA, durable=False)
        self._read_lock = threading.Lock()
        self._reader = open_reader(db_path)

    def write(self, ts: float, usage: Sequence[UsageRow]) -> None:
        """One transaction with one row per ``UsageRow``, stamped ``ts`` (epoch seconds)."""
        rows = [
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
            )
            for r in usage
        ]
        if not rows:
            return
        marks = ", ".join("?" * len(rows[0]))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(f"INSERT INTO usage ({_COLUMNS}) VALUES ({marks})", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def summary(self, since: float | None = None) -> list[dict[str, Any]]:
        """Totals per (strategy, backend) since ``since`` (epoch seconds; None = all time)."""
        failure_sums = ", ".join(f"SUM({c})" for c in FAILURE_COLUMNS)
        query = (
            "SELECT strategy, backend, SUM(requests), SUM(answered), SUM(skipped), "
            f"{failure_sums}, SUM(first_token_ms_sum), SUM(first_token_count), SUM(total_ms_sum), "
            "SUM(total_count), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd), MIN(ts), MAX(ts) "
            "FROM usage WHERE ts >= ? GROUP BY strategy, backend ORDER BY strategy, backend"
        )
        with self._read_lock:
            raw = self._reader.execute(query, (since or 0.0,)).fetchall()
        out = []
        for row in raw:
            strategy, backend, requests, answered, skipped, *rest = row
            n = len(FAILURE_KINDS)
            failures = dict(zip(FAILURE_KINDS, rest[:n], strict=True))
            ft_sum, ft_count, total_sum, total_count, prompt, completion, cost, first, last = rest[n:]
            out.append(
                {
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
                    "cost_usd": round(cost, 6),
                    "first_ts": first,
                    "last_ts": last,
                }
            )
        return out

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._db.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
