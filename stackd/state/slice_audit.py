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
from typing import TypedDict

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
    tries: list[dict[str, object]]  # each try's JSON
    prompt_tokens: int | None  # None: unknown (stored as 0 with tokens_source 'unknown')
    completion_tokens: int | None
    latency_ms: float
    tokens_source: str = "reported"  # the engine's report, stackd's 'estimated' count, or 'unknown'


class ServedSlice(TypedDict):
    """One (preset, slice)'s routed answers, as ``GET /usage`` answers them in ``slices.served``."""

    preset: str
    slice: str
    served: int
    validated: int
    promoted_here: int
    prompt_tokens: int
    completion_tokens: int
    mean_latency_ms: float


class AuditRow(TypedDict):
    """A row as ``GET /slices`` shows it in ``recent``: the record's fields, its id first."""

    id: int
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
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    tokens_source: str
    tries: list[dict[str, object]]


# A row of ``id, _FIELDS`` as SQLite gives it (tries_json is JSON text, validated 0 or 1).
_Row = tuple[int, float, str, str, str, str, str, str, int, str, int, str, int, int, float, str]


def _audit_row(row: _Row) -> AuditRow:
    (id_, ts, preset, slice_, backend, digest, policy, decided_by, validated, check, promotions, tries_json,
     prompt, completion, latency, source) = row  # fmt: skip
    return {  # the columns' order, then the decoded tries (the order GET /slices has always had)
        "id": id_,
        "ts": ts,
        "preset": preset,
        "slice": slice_,
        "backend": backend,
        "model_digest": digest,
        "policy_version": policy,
        "decided_by": decided_by,
        "validated": bool(validated),
        "check_kind": check,
        "promotions": promotions,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "latency_ms": latency,
        "tokens_source": source,
        "tries": json.loads(tries_json),
    }


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

    def recent(self, limit: int = 20) -> list[AuditRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, {_FIELDS} FROM slice_audit ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_audit_row(row) for row in rows]

    def summary(self, since: float | None = None) -> list[ServedSlice]:
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
