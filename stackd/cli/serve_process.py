"""The daemon's own interpreter: what ``stackd serve`` becomes once typer has read its options.

Run in the CLI's interpreter, the daemon would carry the CLI for its whole life: typer, rich's
console and every command's module, ~3 MiB of its idle resident set and 0.1-0.2 s of CPU at
start (docs/benchmarks.md, "Idle memory"). ``exec_daemon`` replaces the process image instead
(same PID, stdio, working directory and environment) with ``python -m stackd.cli.serve_process``,
which reads the options from ``STACKD_SERVE_OPTIONS`` (JSON, removed from the environment before
anything is started) and runs the daemon. Errors print as the CLI's do: one line, ``Name:
message``, exit 1, no traceback.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TypedDict

OPTIONS_ENV = "STACKD_SERVE_OPTIONS"


class ServeOptions(TypedDict, total=False):
    """The ``Settings`` fields ``stackd serve`` sets (the rest keep their defaults)."""

    host: str
    port: int
    config: Path
    state_dir: Path
    gpu_scenario: Path | None
    gpu_total_gb: float | None
    periodic: bool
    log_content: bool
    log_requests: bool


def exec_daemon(options: ServeOptions, argv: Sequence[str]) -> NoReturn:
    """Become the daemon with ``options`` (``Settings`` fields); ``argv`` (the ``serve`` command
    line) is carried so that ``ps`` shows how it was started."""
    env = {**os.environ, OPTIONS_ENV: json.dumps(options, default=str)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", __name__, *argv], env)


def main() -> None:
    raw = os.environ.pop(OPTIONS_ENV, None)
    if raw is None:
        sys.exit("stackd.cli.serve_process is started by `stackd serve`; run that instead")
    gc.disable()  # the imports only allocate: stackd.daemon.run turns it on once the app is built
    from stackd.daemon import run
    from stackd.errors import StackdError
    from stackd.settings import Settings

    try:
        run(Settings(**json.loads(raw)))
    except StackdError as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc.message}\n")
        sys.exit(1)
    except KeyboardInterrupt:  # before uvicorn took over SIGINT
        sys.exit(130)


if __name__ == "__main__":
    main()
