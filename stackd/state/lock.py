"""One daemon per state dir: an exclusive lock on ``STATE_DIR/stackd.lock``, held for the daemon's life.

The daemon takes the lock before it opens ``stackd.db``, recovers a switch or touches an engine,
so a second ``stackd serve`` on the same state dir is refused before it can change anything.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on an open file, not the file's existence: the kernel
drops it when the holder's process ends, however it ends (SIGKILL included), so a file left
behind by a crash never blocks a restart. The file's content, the holder's PID and URL as JSON,
only serves the refusal's message. The descriptor is not inherited (PEP 446): an engine process
the daemon spawns does not keep the lock after the daemon is gone. POSIX only (``fcntl``).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from stackd.errors import Conflict

LOCK_NAME = "stackd.lock"

# The holder writes its record right after it binds its port: a refused daemon that reads an
# empty file waits this long for it before it names the holder without a PID.
RECORD_WAIT_S = 1.0


@dataclass(frozen=True)
class DaemonRecord:
    """Who holds a state dir: the daemon's process id and the URL it serves."""

    pid: int
    url: str


class StateDirLocked(Conflict):
    """Another daemon holds the state dir."""


class StateDirLock:
    """A held lock on a state dir. ``record`` says who holds it; ``release`` (or the end of the
    process) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def record(self, holder: DaemonRecord) -> None:
        """Write ``holder`` into the lock file, replacing what a previous holder wrote."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} was released")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(asdict(holder)).encode(), 0)

    def release(self) -> None:
        """Free the lock; idempotent. The file stays: the next holder overwrites it."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> StateDirLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_state_dir(state_dir: Path, record_wait_s: float = RECORD_WAIT_S) -> StateDirLock:
    """Take the state dir's lock without waiting, creating the dir if needed.

    Raises ``StateDirLocked`` naming the holder (its PID and URL) when another daemon holds it;
    the refused caller has then written nothing."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = read_holder(path, record_wait_s)
        who = f"pid {holder.pid}, {holder.url}" if holder else "its pid not recorded yet"
        raise StateDirLocked(
            f"another stackd ({who}) holds {state_dir.absolute()}; stop it first or pass --state-dir",
            state_dir=str(state_dir.absolute()),
            pid=holder.pid if holder else None,
            url=holder.url if holder else None,
        ) from None
    return StateDirLock(path, fd)


def read_holder(path: Path, wait_s: float = 0.0) -> DaemonRecord | None:
    """The record in the lock file at ``path``, waiting up to ``wait_s`` for one to appear.
    ``None`` when there is none (no file, empty, or not a record)."""
    deadline = time.monotonic() + wait_s
    while True:
        holder = _parse(path)
        if holder is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)


def _parse(path: Path) -> DaemonRecord | None:
    try:
        data = json.loads(path.read_bytes())
        return DaemonRecord(pid=int(data["pid"]), url=str(data["url"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None
