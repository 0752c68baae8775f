"""The usage ledger's journal: rows appended to a file before their call is answered, moved into
SQLite in batches.

A SQLite transaction per answered call cost ~60-90 µs of the event loop's CPU in the running
daemon (BEGIN, INSERT, COMMIT: the WAL append, its index and the locks), a third of a gateway
call's own cost over the thinnest proxy (docs/benchmarks.md). A copy of the call's rows into a
file's shared memory mapping gives the same promise for well under a microsecond: once it is
made, the bytes are in the kernel's page cache, and they survive the daemon's SIGKILL, OOM kill
or crash (not a power cut: neither did the ``synchronous=NORMAL`` commit it replaces).

The journal is a series of generation files (``stackd.db-usage.7``, ...) on the tmpfs
``/dev/shm``, in a 0700 directory of the daemon's user named after the database
(``stackd-UID-HASH``), or beside the database when there is no such tmpfs, what is there under
that name is not the user's own, or it has no room. A tmpfs page is memory: its first write after
each writeback does not fault into a disk filesystem's journal, which cost 20-40 µs of a gateway
call at one connection on ext4 (docs/benchmarks.md). What the tmpfs holds survives the daemon's
death, not the machine's stop; nor did the rows of the last seconds in the disk's page cache,
which is what the ``synchronous=NORMAL`` commit this replaced promised (a daemon stopped as
systemd stops it drains first).
``append`` writes to the current one; ``rotate`` closes it and opens the next, so that a drain
can put exactly one closed file's records into SQLite, mark that generation drained in the same
transaction (``DRAINED_TABLE``) and delete the file. At start, ``undrained`` lists the files a
crash left: the store replays those whose generation is past the drained mark and deletes the
rest. Each append is one line of JSON, ``[[table, [value, ...]], ...]`` (a call's rows, and its
key's); a line cut short (a full disk) is the file's last, was never acknowledged, and is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from stackd.state.json_bytes import dumps, loads

Record = tuple[str, tuple[object, ...]]  # (table, the row's values in its columns' order)
# One file: ~1,400 calls' rows (a busier second fills more than one: a drain takes them all). Small,
# because a tmpfs file's blocks are memory, and a daemon killed for good leaves its last file there.
GENERATION_BYTES = 1024 * 1024
# Memory the kernel keeps until the machine stops: a page written in a file of a disk filesystem
# (ext4) faults into the filesystem's journal on its first write after each writeback, ~20-40 µs
# of a gateway call at one connection (docs/benchmarks.md).
MEMORY_DIR: Path | None = Path("/dev/shm")
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


def allocate(fd: int, size: int) -> None:
    """Give the file ``size`` bytes of real blocks; ``OSError`` when the disk has no room."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # ENOSPC is the caller's
            raise
        zeros = bytes(1024 * 1024)  # a filesystem without fallocate (ZFS): blocks written for real
        for offset in range(0, size, len(zeros)):
            os.pwrite(fd, zeros[: size - offset], offset)


def memory_home(db_path: Path, memory_dir: Path | None) -> Path | None:
    """A directory of this user's for ``db_path``'s journal on the tmpfs ``memory_dir``, made 0700;
    None when there is no such tmpfs or what is there is not ours alone (another user may write
    in ``/dev/shm``: a directory or link planted under the name is never used)."""
    if memory_dir is None or not memory_dir.is_dir():
        return None
    digest = hashlib.sha256(str(db_path.resolve()).encode()).hexdigest()[:16]
    home = memory_dir / f"stackd-{os.geteuid()}-{digest}"
    try:
        home.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(home)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        return None
    return home


class _Generation:
    """One generation's file, mapped: its blocks are allocated when it opens (``fallocate``), so a
    full disk is an ``OSError`` here, never a SIGBUS at a write into the mapping."""

    def __init__(self, path: Path, size: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            allocate(fd, size)
            self.map = mmap.mmap(fd, size)  # MAP_SHARED: the mapping is the file's page cache
        finally:
            os.close(fd)  # the mapping keeps the file
        self.path = path
        self.size = size
        self.used = 0

    def close(self) -> None:
        self.map.close()
        with contextlib.suppress(OSError):  # the unused tail back to the disk (replay stops at a NUL anyway)
            if self.used:
                os.truncate(self.path, self.used)
            else:  # nothing in it: a clean stop leaves no file behind
                self.path.unlink()


class UsageJournal:
    """Generation files ``<db>-usage.<n>``; ``append`` may be called from any thread (one lock).

    Each file is written through a shared memory mapping, not ``write``: a copy into the page
    cache, no system call, and no release of the GIL, which a write hands to the drain's thread
    and must then win back (~14 µs of a gateway call at 5,000 calls a second, docs/benchmarks.md).
    A page of a ``MAP_SHARED`` mapping is the file's: what was copied survives the process's death.
    A file that fills up is closed and the next generation opened; a drain takes them all."""

    def __init__(self, db_path: Path, size: int | None = None) -> None:
        """The files go to ``MEMORY_DIR`` (a tmpfs) when a private directory can be made there
        (``memory_home``); to the state dir otherwise, and for any file the tmpfs has no room for."""
        homes = (memory_home(db_path, MEMORY_DIR), db_path.parent)
        self._homes = [home for home in homes if home is not None]
        self._prefix = f"{db_path.name}-usage."
        self._pattern = re.compile(re.escape(self._prefix) + r"(\d+)$")
        self._lock = threading.Lock()
        self._size = size or GENERATION_BYTES
        self.generation = max((n for n, _ in self.files()), default=0) + 1
        self._file: _Generation | None = self._open(self.generation, self._size)

    def files(self) -> list[tuple[int, Path]]:
        """Every generation file there is, in either home, oldest first."""
        found = []
        for home in self._homes:
            for path in home.glob(f"{self._prefix}*"):
                match = self._pattern.match(path.name)
                if match:
                    found.append((int(match.group(1)), path))
        return sorted(found)

    def _open(self, generation: int, size: int) -> _Generation:
        """The generation's file in the first home with room for it."""
        for home in self._homes[:-1]:
            with contextlib.suppress(OSError):  # a full tmpfs (a container's 64 MiB /dev/shm)
                return _Generation(home / f"{self._prefix}{generation}", size)
        return _Generation(self._homes[-1] / f"{self._prefix}{generation}", size)

    def append(self, data: bytes) -> None:
        """``data`` is in the current generation's file when this returns (the kernel holds it).
        Raises ``OSError`` (a full disk, a closed journal) with nothing acknowledged."""
        with self._lock:
            current = self._file
            if current is None:
                raise OSError("the usage journal is closed")
            if current.used + len(data) > current.size:  # full: the next generation, big enough
                current = self._next(max(self._size, len(data)))
            current.map[current.used : current.used + len(data)] = data
            current.used += len(data)

    def _next(self, size: int) -> _Generation:
        """Close the current file and open the next generation's (the lock held)."""
        assert self._file is not None
        self._file.close()
        self._file = None
        self.generation += 1
        self._file = self._open(self.generation, size)
        return self._file

    def rotate(self) -> int:
        """Close the current file and start the next generation; the newest closed one's number
        (every record appended before this call is in a file up to it). The caller holds whatever
        keeps ``append`` and the records it took in step."""
        with self._lock:
            closed = self.generation
            self._next(self._size)
        return closed

    def remove_through(self, generation: int) -> None:
        """Delete every file up to ``generation`` (their records are in the tables)."""
        for number, path in self.files():
            if number <= generation:
                path.unlink(missing_ok=True)

    def read(self, path: Path) -> list[Record]:
        """A file's records: up to its first NUL (a file the crash left mapped keeps its whole
        allocated size), a line cut short skipped."""
        return list(decode(path.read_bytes().split(b"\x00", 1)[0]))

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        for home in self._homes[:-1]:  # an empty tmpfs home goes too: nothing of it is left behind
            with contextlib.suppress(OSError):
                home.rmdir()
