"""The usage ledger's journal: rows appended to a file before their call is answered, moved into
SQLite in batches.

A SQLite transaction per answered call cost ~60-90 µs of the event loop's CPU in the running
daemon (BEGIN, INSERT, COMMIT: the WAL append, its index and the locks), a third of a gateway
call's own cost over the thinnest proxy (docs/benchmarks.md). An ``os.write`` of the call's rows
to a file opened ``O_APPEND`` gives the same promise for a few microseconds: once it returns, the
bytes are the kernel's, and they survive the daemon's SIGKILL, OOM kill or crash (not a power cut:
neither did the ``synchronous=NORMAL`` commit it replaces).

The journal is a series of generation files beside the database (``stackd.db-usage.7``, ...).
``append`` writes to the current one; ``rotate`` closes it and opens the next, so that a drain
can put exactly one closed file's records into SQLite, mark that generation drained in the same
transaction (``DRAINED_TABLE``) and delete the file. At start, ``undrained`` lists the files a
crash left: the store replays those whose generation is past the drained mark and deletes the
rest. Each append is one line of JSON, ``[[table, [value, ...]], ...]`` (a call's rows, and its
key's); a line cut short (a full disk) is the file's last, was never acknowledged, and is skipped.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from stackd.state.json_bytes import dumps, loads

Record = tuple[str, tuple[object, ...]]  # (table, the row's values in its columns' order)
DRAINED_TABLE = """
CREATE TABLE IF NOT EXISTS usage_journal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    drained INTEGER NOT NULL  -- every journal generation up to this one is in the tables
);
"""


def encode(records: list[Record]) -> bytes:
    """One line for one ``record`` call's records: appended whole, or not at all."""
    return dumps(records) + b"\n"


def decode(raw: bytes) -> Iterator[Record]:
    for line in raw.split(b"\n"):
        if not line:
            continue
        try:
            records = [(str(table), tuple(values)) for table, values in loads(line)]
        except (ValueError, TypeError):  # a last line cut short by a full disk: never acknowledged
            continue
        yield from records


class UsageJournal:
    """Generation files ``<db>-usage.<n>``; ``append`` may be called from any thread (one lock)."""

    def __init__(self, db_path: Path) -> None:
        self._dir = db_path.parent
        self._prefix = f"{db_path.name}-usage."
        self._pattern = re.compile(re.escape(self._prefix) + r"(\d+)$")
        self._lock = threading.Lock()
        self.generation = max((n for n, _ in self.files()), default=0) + 1
        self._fd = self._open(self.generation)

    def files(self) -> list[tuple[int, Path]]:
        """Every generation file there is, oldest first."""
        found = []
        for path in self._dir.glob(f"{self._prefix}*"):
            match = self._pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def _open(self, generation: int) -> int:
        return os.open(self._path(generation), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def _path(self, generation: int) -> Path:
        return self._dir / f"{self._prefix}{generation}"

    def append(self, data: bytes) -> None:
        """``data`` is in the current generation's file when this returns (the kernel holds it).
        Raises ``OSError`` (a full disk) with nothing acknowledged."""
        with self._lock:
            written = os.write(self._fd, data)
            while written < len(data):  # a regular file writes whole unless the disk is full
                written += os.write(self._fd, data[written:])

    def rotate(self) -> int:
        """Close the current file and start the next generation; the closed one's number.
        The caller holds whatever keeps ``append`` and the records it took in step."""
        with self._lock:
            closed = self.generation
            os.close(self._fd)
            self.generation += 1
            self._fd = self._open(self.generation)
        return closed

    def remove_through(self, generation: int) -> None:
        """Delete every file up to ``generation`` (their records are in the tables)."""
        for number, path in self.files():
            if number <= generation:
                path.unlink(missing_ok=True)

    def read(self, path: Path) -> list[Record]:
        return list(decode(path.read_bytes()))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
