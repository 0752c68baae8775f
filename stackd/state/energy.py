"""Energy per stack (table ``energy`` of ``stackd.db``): joules the GPUs drew while each stack was
active, integrated from the power samples (``stackd.hardware.energy``), kept across restarts for
``stackd usage``. A tally: a sample lost to a power cut costs a few joules, so no fsync per write."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from stackd.state.sqlite import open_writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS energy (
    stack TEXT PRIMARY KEY,
    joules REAL NOT NULL,
    since REAL NOT NULL
);
"""


class EnergyStore:
    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = open_writer(path, _SCHEMA, durable=False)

    def add(self, joules: Mapping[str, float], at: float) -> None:
        with self._lock:
            for stack, value in joules.items():
                self._db.execute(
                    "INSERT INTO energy (stack, joules, since) VALUES (?, ?, ?) "
                    "ON CONFLICT(stack) DO UPDATE SET joules = joules + excluded.joules",
                    (stack, value, at),
                )

    def by_stack(self) -> list[dict[str, float | str]]:
        """[{stack, wh, since}] in descending energy."""
        with self._lock:
            rows = self._db.execute("SELECT stack, joules, since FROM energy ORDER BY joules DESC").fetchall()
        return [{"stack": s, "wh": round(j / 3600.0, 3), "since": since} for s, j, since in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
