"""The state dir is private (0700, its database files 0600), and a refused start writes nothing."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from stackd.daemon import UnsafeBind, build_services, refuse_unsafe_bind
from stackd.settings import Settings
from stackd.state.permissions import private_database, private_state_dir

BUNDLED = Path(__file__).resolve().parents[2] / "config" / "model-stacks.yaml"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_state_dir_is_0700_and_its_database_files_0600(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    private_state_dir(state)
    db = state / "stackd.db"
    private_database(db)
    with sqlite3.connect(db) as conn:  # SQLite gives -wal and -shm the database file's mode
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        files = sorted(p.name for p in state.iterdir())
        assert files == ["stackd.db", "stackd.db-shm", "stackd.db-wal"]
        assert {name: mode(state / name) for name in files} == dict.fromkeys(files, 0o600)
    assert mode(state) == 0o700


def test_an_older_state_dir_left_at_0755_and_0644_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    for name in ("stackd.db", "stackd.db-wal", "stackd.db-shm"):
        (state / name).write_bytes(b"")
        os.chmod(state / name, 0o644)
    private_state_dir(state)
    private_database(state / "stackd.db")
    assert mode(state) == 0o700
    assert {mode(state / n) for n in ("stackd.db", "stackd.db-wal", "stackd.db-shm")} == {0o600}


def test_a_shared_sticky_dir_is_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    private_state_dir(shared)  # a --state-dir /tmp by mistake: /tmp stays usable by everyone
    assert mode(shared) == 0o1777


def test_the_daemon_opens_its_database_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKD_TOKEN", raising=False)
    settings = Settings(config=BUNDLED, state_dir=tmp_path / "state", gpu_total_gb=32)
    services = build_services(settings)
    try:
        assert mode(settings.state_dir) == 0o700
        db_files = [p for p in settings.state_dir.iterdir() if p.name.startswith("stackd.db")]
        assert db_files and {mode(p) for p in db_files} == {0o600}
        assert mode(settings.state_dir / "token") == 0o600
    finally:
        services.manager.store.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_a_public_bind_without_a_token_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.delenv("STACKD_TOKEN", raising=False)
    settings = Settings(host=host, config=BUNDLED, state_dir=tmp_path / "state", gpu_total_gb=32)
    with pytest.raises(UnsafeBind, match="STACKD_TOKEN"):
        build_services(settings)
    assert not settings.state_dir.exists()  # no token file, no lock, no database, no dir
    refuse_unsafe_bind(settings, env={"STACKD_TOKEN": "a-long-random-secret"})  # with one: allowed
