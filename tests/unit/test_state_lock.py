"""The state dir's lock: one holder at a time, the refusal names the holder, a crash frees it."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.synchronize
import os
import signal
from pathlib import Path

import pytest

from stackd.errors import Conflict
from stackd.state.lock import LOCK_NAME, DaemonRecord, StateDirLocked, lock_state_dir, read_holder

URL = "http://127.0.0.1:8001"


def test_the_holder_is_recorded_in_the_lock_file(tmp_path: Path) -> None:
    with lock_state_dir(tmp_path / "fresh" / "state") as lock:
        lock.record(DaemonRecord(pid=1234, url=URL))
        assert lock.path == tmp_path / "fresh" / "state" / LOCK_NAME
        assert json.loads(lock.path.read_text()) == {"pid": 1234, "url": URL}
        assert read_holder(lock.path) == DaemonRecord(pid=1234, url=URL)


def test_a_second_lock_is_refused_with_the_holders_pid_and_url(tmp_path: Path) -> None:
    with lock_state_dir(tmp_path) as lock:
        lock.record(DaemonRecord(pid=1234, url=URL))
        with pytest.raises(StateDirLocked) as refused:
            lock_state_dir(tmp_path, record_wait_s=0)
    assert isinstance(refused.value, Conflict)
    assert refused.value.message == (
        f"another stackd (pid 1234, {URL}) holds {tmp_path}; stop it first or pass --state-dir"
    )
    assert refused.value.detail == {"state_dir": str(tmp_path), "pid": 1234, "url": URL}


def test_a_holder_that_has_not_recorded_itself_yet_is_still_refused(tmp_path: Path) -> None:
    with lock_state_dir(tmp_path), pytest.raises(StateDirLocked, match=r"its pid not recorded yet"):
        lock_state_dir(tmp_path, record_wait_s=0)


def test_a_released_lock_is_taken_again_and_its_record_replaced(tmp_path: Path) -> None:
    first = lock_state_dir(tmp_path)
    first.record(DaemonRecord(pid=1234, url="http://127.0.0.1:8001/and/a/longer/path"))
    first.release()
    first.release()  # idempotent
    with pytest.raises(RuntimeError):
        first.record(DaemonRecord(pid=1, url=URL))
    with lock_state_dir(tmp_path) as second:
        second.record(DaemonRecord(pid=5678, url=URL))
        assert read_holder(second.path) == DaemonRecord(pid=5678, url=URL)


@pytest.mark.parametrize("content", ["", "{", "[]", '{"pid": "x", "url": "u"}', '{"url": "u"}'])
def test_a_file_that_holds_no_record_reads_as_none(tmp_path: Path, content: str) -> None:
    (tmp_path / LOCK_NAME).write_text(content)
    assert read_holder(tmp_path / LOCK_NAME) is None
    assert read_holder(tmp_path / "missing") is None


def _hold(state_dir: str, ready: multiprocessing.synchronize.Event) -> None:
    lock = lock_state_dir(Path(state_dir))
    lock.record(DaemonRecord(pid=os.getpid(), url=URL))
    ready.set()
    signal.pause()


def test_another_process_holds_it_until_it_is_killed(tmp_path: Path) -> None:
    """The lock is the kernel's, not the file's: a SIGKILLed holder leaves its file, not its lock."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), ready))
    proc.start()
    assert proc.pid is not None
    try:
        assert ready.wait(30)
        with pytest.raises(StateDirLocked, match=rf"another stackd \(pid {proc.pid}, {URL}\)"):
            lock_state_dir(tmp_path)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    with lock_state_dir(tmp_path) as lock:
        assert read_holder(lock.path) == DaemonRecord(pid=proc.pid, url=URL)  # the dead one's, until
        lock.record(DaemonRecord(pid=os.getpid(), url=URL))  # the new holder writes its own
