"""The audit log of routed elastic calls (table ``slice_audit`` of the state dir's ``stackd.db``).

One row per routed answer: which slice answered, with which weights (the model digest) under
which policy version, how the slice was chosen and every slice tried with why it was left. The
text of the prompt and the answer is not stored. Synchronous and thread-safe; the slice router
writes through ``asyncio.to_thread``; ``summary`` feeds ``/usage`` and ``stackd usage``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackd.state.sqlite import add_missing_columns, open_writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slice_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    preset TEXT NOT NULL,
    slice TEXT NOT NULL,
    backend TEXT NOT NULL,
    model_digest TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    validated INTEGER NOT NULL,
    check_kind TEXT NOT NULL,
    promotions INTEGER NOT NULL,
    tries_json TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    tokens_source TEXT NOT NULL DEFAULT 'reported'
);
CREATE INDEX IF NOT EXISTS slice_audit_ts ON slice_audit (ts);
"""
_ADDED_COLUMNS = {"tokens_source": "TEXT NOT NULL DEFAULT 'reported'"}
_FIELDS = (
    "ts, preset, slice, backend, model_digest, policy_version, decided_by, validated, check_kind, "
    "promotions, tries_json, prompt_tokens, completion_tokens, latency_ms, tokens_source"
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    ts: float
    preset: str
    slice: str
    backend: str
    model_digest: str
    policy_version: str
    decided_by: str
    validated: bool
    check_kind: str
    promotions: int
    tries: list[dict[str, Any]]
    prompt_tokens: int | None  # None: unknown (stored as 0 with tokens_source 'unknown')
    completion_tokens: int | None
    latency_ms: float
    tokens_source: str = "reported"  # the engine's report, stackd's 'estimated' count, or 'unknown'


class SliceAudit:
    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_writer(db_path, _SCHEMA, durable=False)
        add_missing_columns(self._db, "slice_audit", _ADDED_COLUMNS)

    def write(self, record: AuditRecord) -> int:
        """Append one row; its id."""
        row = (
            record.ts,
            record.preset,
            record.slice,
            record.backend,
            record.model_digest,
            record.policy_version,
            record.decided_by,
            int(record.validated),
            record.check_kind,
            record.promotions,
            json.dumps(record.tries, separators=(",", ":")),
            record.prompt_tokens or 0,
            record.completion_tokens or 0,
            record.latency_ms,
            record.tokens_source,
        )
        with self._lock:
            cursor = self._db.execute(
                f"INSERT INTO slice_audit ({_FIELDS}) VALUES ({', '.join('?' * 15)})", row
            )
        return int(cursor.lastrowid or 0)

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, {_FIELDS} FROM slice_audit ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        names = ["id", *(f.strip() for f in _FIELDS.split(","))]
        out = []
        for row in rows:
            item = dict(zip(names, row, strict=True))
            item["tries"] = json.loads(item.pop("tries_json"))
            item["validated"] = bool(item["validated"])
            out.append(item)
        return out

    def summary(self, since: float | None = None) -> list[dict[str, Any]]:
        """Per (preset, slice) served: answers, validated ones, promotions, tokens, mean latency."""
        query = (
            "SELECT preset, slice, COUNT(*), SUM(validated), SUM(promotions > 0), SUM(prompt_tokens), "
            "SUM(completion_tokens), AVG(latency_ms) FROM slice_audit WHERE ts >= ? "
            "GROUP BY preset, slice ORDER BY preset, slice"
        )
        with self._lock:
            rows = self._db.execute(query, (since or 0.0,)).fetchall()
        return [
            {
                "preset": preset,
                "slice": slice_name,
                "served": served,
                "validated": validated,
                "promoted_here": promoted,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "mean_latency_ms": round(latency, 3),
            }
            for preset, slice_name, served, validated, promoted, prompt, completion, latency in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()
