"""The state store: journal lifecycle, atomic commit of the active stack, durability across handles."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from stackd.errors import Conflict, NotFound
from stackd.state.store import StateStore


def clock(start: float = 100.0):
    t = [start]

    def now() -> float:
        t[0] += 1
        return t[0]

    return now


def test_a_fresh_store_has_no_active_stack_and_no_open_switch(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s" / "stackd.db")
    assert store.active_stack() is None
    assert store.open_switch() is None
    assert store.history() == []


def test_commit_sets_the_active_stack_and_writes_history(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "stackd.db", now=clock())
    store.begin_switch("a1", None, "cloud-offload", {"steps": [1]})
    open_ = store.open_switch()
    assert open_ is not None and open_.state == "intended" and open_.plan == {"steps": [1]}
    store.record_step("a1", {"kind": "start_container", "model": "m"})
    store.record_step("a1", {"kind": "bind_role", "role": "r", "model": "m"})
    store.commit_switch("a1", {"ok": True})
    assert store.active_stack() == "cloud-offload"
    assert store.open_switch() is None
    entry = store.get_switch("a1")
    assert entry is not None and entry.state == "committed"
    assert [s["kind"] for s in entry.steps_done] == ["start_container", "bind_role"]
    assert entry.finished_at is not None and entry.finished_at > entry.started_at
    [h] = store.history()
    assert (h.switch_id, h.target_stack, h.state) == ("a1", "cloud-offload", "committed")
    assert h.result == {"ok": True}


def test_a_failed_switch_keeps_the_active_stack(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "stackd.db")
    store.begin_switch("a1", None, "A", {})
    store.commit_switch("a1", {})
    store.begin_switch("b2", "A", "B", {})
    undone = [{"step": {"kind": "stop_container"}, "ok": True}]
    store.fail_switch("b2", "start_container x failed: boom", undone)
    assert store.active_stack() == "A"
    entry = store.get_switch("b2")
    assert entry is not None and entry.state == "rolled_back" and entry.error is not None
    assert entry.undone[0]["ok"] is True
    store.begin_switch("c3", "A", "B", {})
    store.fail_switch("c3", "boom", [], fully_undone=False)
    assert store.get_switch("c3").state == "failed"  # type: ignore[union-attr]
    assert [h.switch_id for h in store.history(2)] == ["c3", "b2"]


def test_one_open_switch_at_a_time_and_finished_switches_stay_finished(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "stackd.db")
    store.begin_switch("a1", None, "A", {})
    with pytest.raises(Conflict, match="a1"):
        store.begin_switch("b2", None, "B", {})
    store.commit_switch("a1", {})
    with pytest.raises(Conflict, match="already finished"):
        store.record_step("a1", {})
    with pytest.raises(NotFound):
        store.commit_switch("nope", {})


def test_recovery_closes_the_open_switch_and_sets_what_runs(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "stackd.db")
    store.begin_switch("a1", None, "A", {})
    store.commit_switch("a1", {})
    store.begin_switch("b2", "A", "B", {})
    store.finish_recovery("b2", "A", "rolled back to A", {"recovery": "rolled_back"})
    assert store.active_stack() == "A"
    entry = store.get_switch("b2")
    assert entry is not None and entry.state == "recovered" and entry.error == "rolled back to A"


def test_state_survives_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    db = tmp_path / "stackd.db"
    first = StateStore(db)
    first.begin_switch("a1", None, "A", {})
    first.commit_switch("a1", {})
    first.begin_switch("b2", "A", "B", {"p": 1})
    first.record_step("b2", {"kind": "pull_model"})
    first.close()
    second = StateStore(db)
    assert second.active_stack() == "A"
    entry = second.open_switch()
    assert entry is not None and entry.switch_id == "b2" and entry.steps_done == [{"kind": "pull_model"}]


def _write_then_hang(db: str, ready: "multiprocessing.synchronize.Event") -> None:  # noqa: UP037
    store = StateStore(db)
    store.begin_switch("a1", None, "A", {})
    store.commit_switch("a1", {})
    store.begin_switch("b2", "A", "B", {})
    store.record_step("b2", {"kind": "start_container"})
    ready.set()
    signal.pause()


def test_sigkill_after_a_write_keeps_every_committed_write(tmp_path: Path) -> None:
    db = tmp_path / "stackd.db"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_write_then_hang, args=(str(db), ready))
    proc.start()
    try:
        assert ready.wait(30) and proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    store = StateStore(db)
    assert store.active_stack() == "A"
    entry = store.open_switch()
    assert entry is not None and entry.switch_id == "b2" and len(entry.steps_done) == 1


def test_the_store_leaves_other_tables_alone(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "stackd.db"
    other = sqlite3.connect(db)
    other.execute("CREATE TABLE usage (ts REAL)")
    other.execute("INSERT INTO usage VALUES (1.0)")
    other.commit()
    store = StateStore(db)
    store.begin_switch("a1", None, "A", {})
    store.commit_switch("a1", {})
    assert other.execute("SELECT count(*) FROM usage").fetchone() == (1,)
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
