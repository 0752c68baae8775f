"""``stackd logs`` with no member: the daemon's own log, read from its state dir.

A detached daemon (``stackd serve --detach``) appends its output to ``STATE_DIR/stackd.log``;
the CLI runs as the daemon's user on its machine (it reads the token there too), so it reads the
file rather than asking the daemon to serve it. A daemon in the foreground logs to its stderr
(under systemd: the journal); then there is no file, and the error says where to look.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from stackd.errors import NotFound

LOG_NAME = "stackd.log"  # as stackd.cli.lifecycle writes it
TAIL_BYTES = 1 << 20
POLL_S = 0.25


def daemon_log(state_dir: Path) -> Path:
    path = state_dir / LOG_NAME
    if not path.is_file():
        raise NotFound(
            f"no daemon log at {path}: only 'stackd serve --detach' writes one; a daemon in the "
            "foreground logs to its stderr (systemd: journalctl -u stackd; Docker: docker logs)"
        )
    return path


def last_lines(path: Path, lines: int) -> tuple[list[str], int]:
    """The last ``lines`` lines of ``path`` and the offset its end had when read."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(0, end - TAIL_BYTES))
        text = f.read(end - f.tell()).decode("utf-8", "replace")
    return text.splitlines()[-lines:], end


def follow(path: Path, offset: int, poll_s: float = POLL_S) -> Iterator[str]:
    """The lines written to ``path`` after ``offset``, as they come (until Ctrl-C); a file
    that shrank (a new log) is read from its start."""
    pending = b""
    while True:
        size = path.stat().st_size if path.exists() else 0
        if size < offset:
            offset, pending = 0, b""
        if size > offset:
            with path.open("rb") as f:
                f.seek(offset)
                pending += f.read(size - offset)
            offset = size
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode("utf-8", "replace")
        else:
            time.sleep(poll_s)
