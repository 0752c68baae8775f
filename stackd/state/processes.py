"""Every engine process stackd has spawned, in SQLite (table ``processes`` of ``stackd.db``).

A row is written (one transaction, fsync'ed) right after the spawn and before the engine is
waited on, and deleted only once the whole process group is gone. A daemon killed with SIGKILL
therefore leaves a row for every engine that may still run; the next start checks each row's
PID *and* its start time (a PID alone may have been reused) and adopts or stops the engine.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from stackd.state.sqlite import open_writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processes (
    model TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    create_time REAL NOT NULL,
    port INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    command TEXT NOT NULL,
    digest TEXT NOT NULL,
    log_path TEXT NOT NULL,
    started_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class ProcessRecord:
    """One engine process: its group leader's PID and start time, where it listens, what it runs.

    ``digest`` is the digest of the member's ``process`` section when it was spawned. An engine
    that still runs is adopted whatever its digest, as a running container is left alone when its
    spec changed (no surprise restart): the edit takes effect at the member's next start."""

    model: str
    pid: int
    create_time: float
    port: int
    endpoint: str
    command: tuple[str, ...]
    digest: str
    log_path: str
    started_at: float


class ProcessTable:
    """The ``processes`` table. Synchronous and thread-safe; async callers use a worker thread."""

    def __init__(self, db_path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = open_writer(db_path, _SCHEMA)

    def record(self, rec: ProcessRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO processes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.model,
                    rec.pid,
                    rec.create_time,
                    rec.port,
                    rec.endpoint,
                    json.dumps(list(rec.command)),
                    rec.digest,
                    rec.log_path,
                    rec.started_at,
                ),
            )

    def forget(self, model: str, pid: int) -> None:
        """Delete ``model``'s row if it is still about ``pid`` (a newer engine's row stays)."""
        with self._lock:
            self._db.execute("DELETE FROM processes WHERE model = ? AND pid = ?", (model, pid))

    def all(self) -> list[ProcessRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT model, pid, create_time, port, endpoint, command, digest, log_path, started_at "
                "FROM processes ORDER BY model"
            ).fetchall()
        return [
            ProcessRecord(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7], r[8])
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MemoryProcessTable:
    """The same contract in memory (unit tests, and a daemon run without a state dir)."""

    def __init__(self) -> None:
        self.rows: dict[str, ProcessRecord] = {}

    def record(self, rec: ProcessRecord) -> None:
        self.rows[rec.model] = rec

    def forget(self, model: str, pid: int) -> None:
        if model in self.rows and self.rows[model].pid == pid:
            del self.rows[model]

    def all(self) -> list[ProcessRecord]:
        return [self.rows[k] for k in sorted(self.rows)]

    def close(self) -> None:
        pass
