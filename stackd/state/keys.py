"""API keys and what each key spent (tables ``api_keys`` and ``key_usage`` of ``stackd.db``).

A key is stored as the SHA-256 of its text, never the text. A plain hash (no salt, no slow KDF)
is enough because every key is 32 random bytes from ``secrets``: nobody can guess one, so there
is no dictionary for a salt or a work factor to defeat, and a fast digest lets the daemon find a
key by its digest in an in-memory dict on every request (``stackd.api.keyring``) instead of
trying a slow hash against each row. A leaked database therefore gives no usable key.

What a key spent is in the usage ledger: each ``usage`` row carries the key of its call
(``KeyedUsageStore``), with the rows' durability, and the per-key limits are counted from it
again after a restart. ``key_usage`` held one row per keyed call before that: its rows are still
read (``spend_since``), nothing writes it any more.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from stackd.state.sqlite import open_reader, open_writer
from stackd.state.usage import UsageRow, UsageStore, usage_table

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    models TEXT NOT NULL,
    rpm INTEGER,
    daily_tokens INTEGER,
    daily_cost_usd REAL,
    created REAL NOT NULL,
    expires REAL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS key_usage (
    ts REAL NOT NULL,
    key TEXT NOT NULL,
    request_id TEXT,
    tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS key_usage_ts ON key_usage (ts);
"""
KEY_USAGE_COLUMNS = "ts, key, request_id, tokens, cost_usd"  # an older stackd's journal may hold some
# Per key since ?1: its calls, tokens and cost; the ledger's rows (one per call and backend it
# tried) and the rows of the table an older stackd wrote.
_SPEND = """
SELECT key, SUM(calls), SUM(tokens), SUM(cost) FROM (
    SELECT key, COUNT(DISTINCT request_id) AS calls, SUM(prompt_tokens + completion_tokens) AS tokens,
           SUM(cost_usd) AS cost
    FROM usage WHERE ts >= ?1 AND key IS NOT NULL GROUP BY key
    UNION ALL
    SELECT key, COUNT(*), SUM(tokens), SUM(cost_usd) FROM key_usage WHERE ts >= ?1 GROUP BY key
) GROUP BY key
"""
# Each keyed call's first time since ?1 (its rows share its request id), oldest first.
_CALL_TIMES = """
SELECT key, MIN(ts) AS at FROM usage WHERE ts >= ?1 AND key IS NOT NULL GROUP BY key, request_id
UNION ALL
SELECT key, ts FROM key_usage WHERE ts >= ?1
ORDER BY at
"""
# Keyed calls whose key is remembered until the ledger writes them; far more than are ever in flight.
MAX_CLAIMS = 10_000


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as stored: its digest, never its text."""

    name: str
    digest: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] = ()  # empty: every model and role
    rpm: int | None = None
    daily_tokens: int | None = None
    daily_cost_usd: float | None = None
    created: float = 0.0
    expires: float | None = None
    revoked: float | None = None

    def to_public(self) -> dict[str, object]:
        """The key's description for ``GET /keys`` and ``stackd keys list``: no digest."""
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "models": list(self.models),
            "rpm": self.rpm,
            "daily_tokens": self.daily_tokens,
            "daily_cost_usd": self.daily_cost_usd,
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
        }


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What one key used, for its limits and ``stackd usage --by key``."""

    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    recent: tuple[float, ...] = field(default=())  # call times of the last minute


class KeyStore:
    """Synchronous and thread-safe; key changes are rare (the control API calls it directly)."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        # A key revoked and then back after a power cut would be a lie: FULL for this table.
        self._db = open_writer(db_path, _SCHEMA, durable=True)
        usage_table(self._db)  # what keys spent is read from it
        self._reader = open_reader(db_path)
        self._catch_up: Callable[[], None] = _nothing  # the ledger's recorded rows into SQLite

    def reads_after(self, catch_up: Callable[[], None]) -> None:
        """Run ``catch_up`` before each read of what keys spent (the usage store's journal drained)."""
        self._catch_up = catch_up

    def all(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._reader.execute(
                "SELECT name, digest, scopes, models, rpm, daily_tokens, daily_cost_usd, created, "
                "expires, revoked FROM api_keys ORDER BY name"
            ).fetchall()
        return [
            KeyRecord(n, d, tuple(json.loads(s)), tuple(json.loads(m)), r, t, c, cr, e, rv)
            for n, d, s, m, r, t, c, cr, e, rv in rows
        ]

    def put(self, key: KeyRecord) -> None:
        """Insert or replace the key of this name (a rotation replaces its digest)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.name,
                    key.digest,
                    json.dumps(list(key.scopes)),
                    json.dumps(list(key.models)),
                    key.rpm,
                    key.daily_tokens,
                    key.daily_cost_usd,
                    key.created,
                    key.expires,
                    key.revoked,
                ),
            )

    def spend_since(self, since: float, recent_since: float) -> dict[str, KeySpend]:
        """Per key: calls, tokens and cost since ``since``, and its call times after ``recent_since``."""
        self._catch_up()
        with self._lock:
            totals = self._reader.execute(_SPEND, (since,)).fetchall()
            recent = self._reader.execute(_CALL_TIMES, (recent_since,)).fetchall()
        times: dict[str, list[float]] = {}
        for key, ts in recent:
            times.setdefault(key, []).append(ts)
        return {
            key: KeySpend(calls, int(tokens or 0), float(cost or 0.0), tuple(times.get(key, ())))
            for key, calls, tokens, cost in totals
        }

    def close(self) -> None:
        with self._lock:
            self._reader.close()
            self._db.close()


class KeyedUsageStore(UsageStore):
    """The usage ledger's store, whose rows carry the key of their call: the front door
    ``claim``s each keyed call's request id for its key (bounded, the oldest claims dropped), and
    ``record`` stamps each row with the key its request id was claimed for."""

    def __init__(self, db_path: Path, keys: KeyStore) -> None:
        """``keys``: the key table of the same database. ``key_usage``'s records an older stackd's
        journal holds are replayed into it."""
        super().__init__(db_path, {"key_usage": KEY_USAGE_COLUMNS}, _SCHEMA)
        self.keys = keys
        keys.reads_after(self.catch_up)
        self._claims: OrderedDict[str, str] = OrderedDict()
        self._claims_lock = threading.Lock()
        self._listeners: list[Callable[[str, int, float], None]] = []

    def claim(self, request_id: str, key: str) -> None:
        """The call ``request_id`` is ``key``'s."""
        with self._claims_lock:
            self._claims[request_id] = key
            if len(self._claims) > MAX_CLAIMS:
                self._claims.popitem(last=False)

    def on_call(self, listener: Callable[[str, int, float], None]) -> None:
        """Call ``listener(key, tokens, cost_usd)`` for each keyed row recorded (on the thread that
        records it: the event loop's)."""
        self._listeners.append(listener)

    def _keys_of(self, usage: Sequence[UsageRow]) -> Sequence[str | None]:
        if not self._claims:
            return super()._keys_of(usage)
        with self._claims_lock:
            # kept, not popped: one call may reach the ledger in more than one batch (slices)
            claimed = self._claims.get
            return [claimed(row.request_id) if row.request_id is not None else None for row in usage]

    def _told(self, usage: Sequence[UsageRow], keys: Sequence[str | None]) -> Callable[[], None]:
        if not self._listeners or not any(keys):
            return _nothing
        return partial(self._tell, usage, keys)

    def _tell(self, usage: Sequence[UsageRow], keys: Sequence[str | None]) -> None:
        for row, key in zip(usage, keys, strict=True):
            if key is not None:
                for listener in self._listeners:
                    listener(key, row.prompt_tokens + row.completion_tokens, row.cost_usd)


def _nothing() -> None:
    pass


def spend_by_key(spend: Mapping[str, KeySpend]) -> list[dict[str, object]]:
    """``stackd usage --by key``'s rows."""
    return [
        {"key": key, "calls": s.calls, "tokens": s.tokens, "cost_usd": round(s.cost_usd, 6)}
        for key, s in sorted(spend.items())
    ]
