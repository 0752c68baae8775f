"""What the GPU coordinator remembers across restarts (tables ``leases`` and ``footprints`` of
the state dir's ``stackd.db``).

``leases``: one row per live lease, written when it is granted or renewed and deleted when it is
released or found expired; a restarted daemon reads them back, so a lease outlives the daemon
(its model keeps running: engines outlive a SIGKILLed daemon and are adopted).

``footprints``: the largest GPU memory a member was measured to hold, per model and per digest of
the config that decides it (runtime section, placement): a member measured at 14 GiB against a
declared 12 GiB is budgeted at 14 GiB from then on, until its engine's config changes.

Each write is one transaction (WAL, ``synchronous=FULL``, as ``stackd.state.store``); callers on
the event loop run them through ``asyncio.to_thread``. The class is thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stackd.state.sqlite import open_writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    lease_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    ttl_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS footprints (
    model TEXT NOT NULL,
    digest TEXT NOT NULL,
    measured_mib INTEGER NOT NULL,
    measured_at REAL NOT NULL,
    PRIMARY KEY (model, digest)
);
"""


@dataclass(frozen=True)
class LeaseRow:
    lease_id: str
    model: str
    acquired_at: float
    expires_at: float
    ttl_s: float


class GpuJournal:
    """Leases and measured footprints in SQLite. ``now`` stamps ``measured_at``."""

    def __init__(self, path: Path | str, now: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._now = now
        self._lock = threading.Lock()
        self._db = open_writer(self.path, _SCHEMA)
        with self._lock:
            rows = self._db.execute("SELECT model, digest, measured_mib FROM footprints").fetchall()
        # Read on the event loop by every plan and status: served from memory, written through.
        self._footprints = {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- leases

    def save_lease(self, row: LeaseRow) -> None:
        """Insert or replace one lease (a grant or a renewal)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO leases (lease_id, model, acquired_at, expires_at, ttl_s) "
                "VALUES (?, ?, ?, ?, ?)",
                (row.lease_id, row.model, row.acquired_at, row.expires_at, row.ttl_s),
            )

    def delete_lease(self, lease_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM leases WHERE lease_id = ?", (lease_id,))

    def leases(self) -> list[LeaseRow]:
        """Every journalled lease, oldest first (expired ones too: the coordinator drops them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT lease_id, model, acquired_at, expires_at, ttl_s FROM leases ORDER BY acquired_at"
            ).fetchall()
        return [LeaseRow(r[0], r[1], float(r[2]), float(r[3]), float(r[4])) for r in rows]

    # ---------------------------------------------------------------- footprints

    def record_footprint(self, model: str, digest: str, measured_mib: int) -> int:
        """Remember ``measured_mib`` unless a larger figure is known for (model, digest); returns
        the figure kept. One transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT measured_mib FROM footprints WHERE model = ? AND digest = ?", (model, digest)
                ).fetchone()
                kept = max(int(row[0]), measured_mib) if row else measured_mib
                if row is None or kept != int(row[0]):
                    self._db.execute(
                        "INSERT OR REPLACE INTO footprints (model, digest, measured_mib, measured_at) "
                        "VALUES (?, ?, ?, ?)",
                        (model, digest, kept, self._now()),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._footprints[(model, digest)] = kept
        return kept

    def footprints(self) -> dict[tuple[str, str], int]:
        """(model, digest) -> the largest measured MiB (from memory: no I/O)."""
        return dict(self._footprints)
