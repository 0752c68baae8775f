"""The audit trail of control actions (table ``audit`` of ``stackd.db``).

One row per control action a caller asked for (a switch, a lease, a reload, the kill switch, a
key change), whatever its outcome: who (the key's name), what (the action and its target), from
where (the peer address), when, and the answer's status. Written after the answer, in a worker
thread; control actions are rare, so a row per action costs nothing the hot path sees.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from stackd.state.sqlite import open_reader, open_writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    ts REAL NOT NULL,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    peer TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: float
    key: str  # the key's name; "anonymous" never appears: control actions need a key
    action: str  # "POST /model-stacks/switch", "mcp switch_stack", "keys.create"
    target: str  # the stack, model, lease id or key name acted on ("" when none)
    peer: str  # the client's address
    outcome: str  # the HTTP status, or "error: Kind" for an MCP tool

    def to_dict(self) -> dict[str, str | float]:
        return asdict(self)


class AuditLog:
    """Synchronous and thread-safe; the API calls ``record`` through ``asyncio.to_thread``."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_writer(db_path, _SCHEMA, durable=True)
        self._reader = open_reader(db_path)

    def record(self, entry: AuditEntry) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)",
                (entry.ts, entry.key, entry.action, entry.target, entry.peer, entry.outcome),
            )

    def recent(self, limit: int = 100, key: str | None = None) -> list[AuditEntry]:
        """The last ``limit`` entries (of ``key`` when given), newest first."""
        query = "SELECT ts, key, action, target, peer, outcome FROM audit"
        args: tuple[str, ...] = ()
        if key is not None:
            query, args = query + " WHERE key = ?", (key,)
        with self._lock:
            rows = self._reader.execute(query + " ORDER BY ts DESC LIMIT ?", (*args, limit)).fetchall()
        return [AuditEntry(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._reader.close()
            self._db.close()
