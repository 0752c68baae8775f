"""An engine's log file: one per member (``STATE_DIR/logs/NAME.log``), its stdout and stderr run
after run, each run after a ``START_MARKER`` line; its tail, and the failure message built on it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from stackd.drivers import process_group as pg
from stackd.drivers.probe_lines import is_probe_line

LOG_CAP_BYTES = 4 * 2**20
LOG_TAIL_LINES = 20
START_MARKER = "---- stackd: start "


def member_log_path(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def engine_log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of the current run, without the health probes' requests: they would be
    most of a quiet engine's tail."""
    return pg.log_tail(path, lines, START_MARKER, drop=is_probe_line)


def write_start_marker(path: Path, port: int, argv: Sequence[str]) -> None:
    """The line a run's output follows (blocks: call it in a worker thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(
            f"{START_MARKER}{time.strftime('%Y-%m-%dT%H:%M:%S')} "
            f"port {port}: {argv[0]} … ({len(argv)} args)\n"
        )


def failure_message(name: str, what: str, tail: Sequence[str], full_log: Path) -> str:
    """A failed start, said with the lines the engine wrote last (what a person acts on)."""
    lines = "; last log lines: " + " | ".join(tail) if tail else "; it wrote nothing to its log"
    return f"process member '{name}' {what}{lines} (full log: {full_log})"
