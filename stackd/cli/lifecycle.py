"""``stackd serve --detach`` and ``stackd stop``: start a daemon in the background and return once
it serves, stop one and return once it (and every engine it ran) is gone.

Both are for a person at a shell (and the README's blocks): systemd runs ``stackd serve`` in the
foreground instead. ``--detach`` re-runs the same command without the flag in a new session,
its output appended to ``STATE_DIR/stackd.log``, and waits for ``/healthz``: the daemon answers
only once its start-up (recovery, the first stack, the engines' readiness) is done, so when the
command returns, the stack is up. A daemon that exits during its start-up is reported with the
last lines of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil

from stackd.drivers.process_group import log_tail
from stackd.errors import StackdError
from stackd.state.lock import LOCK_NAME, read_holder

LOG_NAME = "stackd.log"
START_TIMEOUT_S = 900.0  # a first start may assemble a model file and load engines
STOP_TIMEOUT_S = 90.0  # stopping engines: their grace periods, in parallel


class DaemonStartFailed(StackdError):
    """The detached daemon exited before it served."""


class NoDaemon(StackdError):
    status = 404


def serve_detached(
    argv: Sequence[str], state_dir: Path, url: str, timeout_s: float = START_TIMEOUT_S
) -> tuple[int, Path]:
    """Run ``stackd <argv>`` (a ``serve`` command line without ``--detach``) in the background;
    return (pid, log path) once ``url`` serves ``/healthz``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / LOG_NAME
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stackd.cli", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DaemonStartFailed(
                    f"stackd exited with code {proc.returncode} before it served; "
                    f"its log ({log_path}) ends with: {_tail(log_path)}"
                )
            try:
                health = http.get(f"{url}/healthz")
                if health.status_code == 200 and health.json().get("pid") in (None, proc.pid):
                    return proc.pid, log_path
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
    raise DaemonStartFailed(
        f"stackd (pid {proc.pid}) did not serve {url} within {timeout_s:g} s; "
        f"it keeps starting in the background; see {log_path}"
    )


def stop_daemon(state_dir: Path, url: str | None, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM the daemon of ``state_dir`` (or the one at ``url``); return its pid once it is gone."""
    pid = _daemon_pid(state_dir, url)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise NoDaemon(f"no stackd runs for {state_dir} (pid {pid} is gone)") from None
    try:
        psutil.Process(pid).wait(timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise StackdError(
            f"stackd (pid {pid}) is still stopping after {timeout_s:g} s; its engines may "
            f"be slow to stop, see {state_dir / LOG_NAME}"
        ) from None
    return pid


def _daemon_pid(state_dir: Path, url: str | None) -> int:
    holder = read_holder(state_dir / LOCK_NAME)
    if holder is not None and psutil.pid_exists(holder.pid):
        return holder.pid
    if url is not None:
        try:
            pid = httpx.get(f"{url.rstrip('/')}/healthz", timeout=5.0, trust_env=False).json().get("pid")
        except (httpx.HTTPError, ValueError):
            pid = None
        if isinstance(pid, int):
            return pid
    raise NoDaemon(
        f"no stackd runs for {state_dir}"
        + (f" or at {url}" if url else "")
        + "; start one with: stackd serve --detach"
    )


def _tail(path: Path, lines: int = 8) -> str:
    return " | ".join(log_tail(path, lines)) or "(nothing)"
