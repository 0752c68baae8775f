"""The one way stackd opens its SQLite database (``stackd.db`` in the state dir).

Every table's owner opens its own connections through here, so that all of them agree on WAL,
the busy timeout and, for the tables whose loss would be a lie after a crash (the journal, the
process table, leases), ``synchronous=FULL``. Usage and the slice audit use ``NORMAL``: a row is
in the WAL before its call is answered (it survives a SIGKILL), and one lost to a power cut costs
a tally, not a lie about the stack.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

BUSY_TIMEOUT_MS = 5000  # how long a writer waits for another connection's write lock


def open_writer(path: Path | str, schema: str, *, durable: bool = True) -> sqlite3.Connection:
    """A connection that writes (autocommit: each statement or ``BEGIN`` block is a transaction),
    with ``schema`` applied. Creates the directory."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # FULL fsyncs every commit; NORMAL (WAL) writes the commit to the WAL file and fsyncs only at
    # checkpoints: a committed row survives the process's death (SIGKILL), not a power cut.
    # SQLite's compiled default is FULL, so NORMAL is asked for, not assumed.
    db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.executescript(schema)
    return db


def add_missing_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Add to ``table`` each of ``columns`` (name -> declaration) it lacks: a ``stackd.db``
    written by an older stackd keeps its rows and gains the new columns' defaults."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for name, declaration in columns.items():
        if name not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


def open_reader(path: Path | str) -> sqlite3.Connection:
    """A read-only connection beside the writer: WAL readers never wait for a writer."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA query_only=ON")
    # A WAL reader waits only in rare moments (another connection recovers or removes the WAL).
    db.execute("PRAGMA busy_timeout=1000")
    return db
