"""The state dir is private: the directory 0700, the database and its WAL files 0600.

``stackd.db`` holds the switch journal, the usage rows and the engines' process table; the state
dir also holds the token. Nobody but the daemon's user reads them. SQLite creates
``stackd.db-wal`` and ``stackd.db-shm`` with the database file's own mode, so creating the
database 0600 before SQLite opens it, and tightening what an older version left at 0644, is
enough for all three.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_state_dir(state_dir: Path) -> None:
    """Create ``state_dir`` (and its parents) as 0700, or tighten an existing one to 0700.

    A directory that is not the daemon user's own, or a shared one with the sticky bit (a
    ``--state-dir /tmp`` by mistake), is left as it is: its files are 0600 all the same."""
    state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = state_dir.stat()
    if st.st_uid == os.getuid() and not st.st_mode & stat.S_ISVTX and stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(state_dir, DIR_MODE)


def private_database(db_path: Path) -> None:
    """Create ``db_path`` empty with mode 0600 if it does not exist (SQLite takes an empty file as
    a new database); tighten it and its ``-wal``/``-shm``/``-journal`` files to 0600."""
    fd = os.open(db_path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = db_path.with_name(db_path.name + suffix)
        if path.exists():
            os.chmod(path, FILE_MODE)
