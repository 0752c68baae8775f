"""Fixtures for every test: no engine process a test started may outlive it.

Every engine the process runtime spawns carries ``STACKD_MEMBER`` in its environment (see
``stackd.drivers.process_group``). After each test (this fixture is torn down last, after the
test's own daemons and drivers), an engine started during the test is *left behind* when no
running ``stackd serve`` owns it: its parent is this pytest process (a driver that never stopped
it) or it was orphaned (a killed daemon that nobody recovered). Such an engine is killed with its
process group and the test fails, naming it: a leaked engine is a bug of the code under test (or
of the test), never something to clean up silently. An engine of a live daemon (a module-scoped
fixture's, or one a developer runs by hand) is its daemon's business.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

from stackd.drivers.process_group import MEMBER_ENV

# Every process this test session starts inherits this marker (daemons, and the engines they
# spawn, keep the environment they were given): another session's engines — a second pytest, a
# developer's own daemon — are never this session's business, and never killed by it.
SESSION_ENV = "PYTEST_STACKD_SESSION"
SESSION = os.environ.setdefault(SESSION_ENV, uuid.uuid4().hex)
# Under pytest-xdist each worker is a session of its own: an engine of the other worker's test is
# alive and owned, not left behind by this one.
if (_worker := os.environ.get("PYTEST_XDIST_WORKER")) and not SESSION.endswith(f"-{_worker}"):
    SESSION = os.environ[SESSION_ENV] = f"{SESSION}-{_worker}"


def engine_processes(since: float) -> list[tuple[int, str]]:
    """(pid, member) of live engine processes of this session started at or after ``since``."""
    out = []
    for proc in psutil.process_iter(["create_time", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["create_time"] < since or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
            member = env.get(MEMBER_ENV)
            if member and env.get(SESSION_ENV) == SESSION and not owned_by_a_daemon(proc):
                out.append((proc.pid, member))
    return out


def owned_by_a_daemon(proc: psutil.Process) -> bool:
    parent = proc.parent()
    if parent is None or parent.pid == os.getpid():
        return False
    cmdline = " ".join(parent.cmdline())
    return "stackd" in cmdline and " serve" in cmdline


@pytest.fixture(autouse=True)
def no_engine_left_behind() -> Iterator[None]:
    started = time.time() - 0.5
    yield
    left = engine_processes(started)
    if not left:
        return
    time.sleep(0.5)  # a stop that is finishing right now (a daemon's shutdown) gets its moment
    left = engine_processes(started)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    if left:
        pytest.fail(f"engine processes left behind: {', '.join(f'{m} (pid {p})' for p, m in left)}")


# uvicorn's own logging set-up (a test or a module fixture that runs uvicorn without
# ``log_config=None``) leaves its loggers with handlers of their own and ``propagate = False``: a
# later test in the same worker that reads the log through the root logger, as the daemon's
# handlers do, would see no uvicorn line at all. Each test starts with them as the daemon has them.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture(autouse=True)
def uvicorn_loggers_as_the_daemon_has_them() -> None:
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.NOTSET)
        logger.propagate, logger.disabled, logger.handlers = True, False, []
