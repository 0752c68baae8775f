"""The day policy's memory (table ``day_policy`` of ``stackd.db``): the hold, the idle downshift,
the last window taken up and a change given up, as one JSON row.

A restarted daemon reads it back, so a hold survives a restart and a window that began while the
daemon was stopped is recognised as missed. Writes are rare (a hold, a window, a downshift) and
durable (``synchronous=FULL``): a hold lost to a power cut would be a lie.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from stackd.state.sqlite import open_writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS day_policy (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);
"""


class DayPolicyStore:
    """One JSON document; thread-safe. ``load`` returns {} before the first ``save``."""

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = open_writer(path, _SCHEMA)

    def load(self) -> dict[str, object]:
        with self._lock:
            row = self._db.execute("SELECT state FROM day_policy WHERE id = 1").fetchone()
        if row is None:
            return {}
        value = json.loads(row[0])
        return value if isinstance(value, dict) else {}

    def save(self, state: dict[str, object]) -> None:
        text = json.dumps(state, sort_keys=True)
        with self._lock:
            self._db.execute(
                "INSERT INTO day_policy (id, state) VALUES (1, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state",
                (text,),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
