"""Operating-system facts about engine processes: spawn in a group, signal the group, measure it.

Plain functions over PIDs and files, no state, so that the process driver's policy (when to
start, stop, restart, adopt) stays apart from how Linux does it. Why the choices:

- ``start_new_session``: the engine leads its own process group, so a stop signals every
  process it forked (llama-swap's ``Setpgid``), and a Ctrl-C in stackd's terminal is not sent to
  the engines (stackd stops them itself, in order).
- stdout and stderr go straight to a file, never through a pipe: an engine must survive a
  SIGKILLed stackd (the next start adopts it), and a pipe whose reader died kills its writer with
  SIGPIPE; a file also never back-pressures the engine (llama-swap #875) and never makes a
  ``wait`` hang on a grandchild that holds the pipe (llama-swap #804).
- Liveness is PID *and* start time: after a reboot or a long downtime a PID is reused.
- Every engine carries ``STACKD_OWNER`` and ``STACKD_MEMBER`` in its environment, so an engine
  spawned in the instant before its record was written is still found (and stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import psutil

OWNER_ENV = "STACKD_OWNER"
MEMBER_ENV = "STACKD_MEMBER"
# A tail reads back this far: the health probes' lines it drops may be most of it (~10 KiB an hour).
TAIL_BYTES = 65_536
Sleep = Callable[[float], Awaitable[None]]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (bind port 0). The engine binds it a moment later; an engine
    that exits at once with "address in use" lost that race and is reported with its log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
) -> asyncio.subprocess.Process:
    """Start ``argv`` (no shell) as the leader of a new session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    finally:
        os.close(fd)  # the child holds its own copy


def create_time(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), None when it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except psutil.Error:
        return None


def is_alive(pid: int, started: float) -> bool:
    """True while ``pid`` is the very process that started at ``started`` (not a reused PID)."""
    now = create_time(pid)
    return now is not None and abs(now - started) < 1.0


def has_exited(pid: int) -> bool:
    """True when ``pid`` is gone or a zombie (dead, not reaped yet)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    out = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                out.append(proc.pid)
    return out


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def stop_group(
    pgid: int, grace_s: float, sleep: Sleep = asyncio.sleep, exited: Callable[[], bool] | None = None
) -> str:
    """SIGTERM the group, SIGKILL it after ``grace_s``, return once no process of it lives.

    ``exited`` tells whether the leader is gone (for a child of ours, after it was reaped); the
    group is then polled for stragglers. Returns how it ended, for the log."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if (exited is None or exited()) and not group_members(pgid):
            return "stopped on SIGTERM"
        await sleep(0.05)
    while True:
        signal_group(pgid, signal.SIGKILL)
        if (exited is None or exited()) and not group_members(pgid):
            return f"killed with SIGKILL after {grace_s:g} s"
        await sleep(0.05)


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_pids(pid: int) -> tuple[int, ...]:
    return tuple(p.pid for p in tree(pid))


def tree_rss_mib(pid: int) -> int | None:
    """Resident memory of the process and all its descendants, in MiB."""
    total = 0
    procs = tree(pid)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return round(total / 2**20) if procs else None


def owned_processes(owner: str) -> list[tuple[int, str]]:
    """(pid, member) of every live process whose environment names ``owner`` as its stackd."""
    out = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            env = proc.environ()
            if env.get(OWNER_ENV) == owner and proc.status() != psutil.STATUS_ZOMBIE:
                out.append((proc.pid, env.get(MEMBER_ENV, "?")))
    return out


def log_tail(
    path: Path, lines: int = 20, since_marker: str | None = None, drop: Callable[[str], bool] | None = None
) -> list[str]:
    """The last ``lines`` lines of ``path`` (after the last ``since_marker`` line, when given),
    leaving out those ``drop`` says (before counting: ``lines`` are kept ones)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    if start > 0:  # the first line read is likely the end of a longer one
        text = text.split("\n", 1)[1] if "\n" in text else ""
    if since_marker is not None and since_marker in text:
        text = text[text.rindex(since_marker) :]
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return [line for line in text.splitlines() if line.strip() and not (drop and drop(line))][-lines:]


def cap_log(path: Path, max_bytes: int) -> bool:
    """Keep ``path`` under ``max_bytes``: copy it to ``path.1`` and truncate it in place (the
    engine's descriptor is O_APPEND, so its next write lands at the new end). True when cut."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
        old = path.with_name(path.name + ".1")
        with path.open("rb") as src, old.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        os.truncate(path, 0)
    except OSError:
        return False
    return True
