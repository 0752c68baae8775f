"""The process runtime against real OS processes (tests/integration/engine_sim.py as the engine).

Each test spawns real engines in their own process groups, waits on real HTTP readiness and
signals real groups; the autouse fixture of tests/conftest.py fails any test that leaves one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from stackd.config.models import Model
from stackd.drivers import process_group as pg
from stackd.drivers.process import LocalProcessDriver
from stackd.errors import DriverFailed
from stackd.roles import LiveEndpoints
from stackd.state.processes import ProcessTable

ENGINE = str(Path(__file__).with_name("engine_sim.py"))


def engine_model(*flags: str, start_timeout_s: float = 20, **process: Any) -> Model:
    return Model.model_validate(
        {
            "runtime": "process",
            "placement": "cpu",
            "api": "openai",
            "memory_gb": 0.1,
            "health": {"path": "/v1/models", "start_timeout_s": start_timeout_s},
            "process": {
                "command": [sys.executable, ENGINE, "--port", "${PORT}", *flags],
                "stop_grace_s": 1,
                **process,
            },
        }
    )


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[LocalProcessDriver]:
    d = LocalProcessDriver(
        tmp_path / "state", ProcessTable(tmp_path / "state" / "stackd.db"), LiveEndpoints()
    )
    yield d
    await d.aclose()


def group_alive(pid: int) -> bool:
    return bool(pg.group_members(pid))


async def test_start_waits_for_health_then_stop_leaves_nothing_of_the_group(
    driver: LocalProcessDriver, tmp_path: Path
) -> None:
    model = engine_model("--ready-after", "0.5", "--hog-mib", "64")
    began = time.monotonic()
    await driver.ensure_running("eng", model)
    assert time.monotonic() - began >= 0.5  # it answered 503 "Loading model" first
    [info] = driver.processes()
    assert info.state == "ready" and info.pid is not None and info.port is not None
    assert info.endpoint == f"http://127.0.0.1:{info.port}/v1"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{info.port}/v1/models")).status_code == 200
    assert info.rss_mib is not None and info.rss_mib >= 64
    assert await driver.running({"eng": model}) == {"eng"}
    table = ProcessTable(tmp_path / "state" / "stackd.db")
    assert [r.pid for r in table.all()] == [info.pid]  # journalled while it runs
    await driver.ensure_running("eng", model)  # idempotent: the same engine
    assert driver.processes()[0].pid == info.pid
    await driver.ensure_stopped("eng", model)
    assert not group_alive(info.pid)
    assert table.all() == []
    assert driver.endpoint("eng") is None
    assert await driver.running({"eng": model}) == frozenset()
    await driver.ensure_stopped("eng", model)  # idempotent


async def test_an_engine_that_exits_fails_the_start_at_once_with_its_last_lines(
    driver: LocalProcessDriver,
) -> None:
    model = engine_model("--exit-now", "--exit-code", "3")
    began = time.monotonic()
    with pytest.raises(DriverFailed) as failed:
        await driver.ensure_running("eng", model)
    assert time.monotonic() - began < 5
    message = failed.value.message
    assert "exited with code 3 before it was ready" in message
    assert "cannot load model (simulated)" in message
    assert driver.processes()[0].state == "failed"


async def test_a_start_that_never_gets_ready_times_out_and_is_killed(driver: LocalProcessDriver) -> None:
    model = engine_model("--listen-after", "30", start_timeout_s=1)
    with pytest.raises(DriverFailed, match=r"was not ready within 1 s .*start_timeout_s"):
        await driver.ensure_running("eng", model)
    assert driver.processes()[0].pid is None


async def test_stop_escalates_to_sigkill_and_takes_the_grandchild_too(driver: LocalProcessDriver) -> None:
    model = engine_model("--ignore-sigterm", "--grandchild")
    await driver.ensure_running("eng", model)
    pid = driver.processes()[0].pid
    assert pid is not None
    await asyncio.sleep(0.2)
    assert len(pg.group_members(pid)) == 2  # the engine and the child it forked
    began = time.monotonic()
    await driver.ensure_stopped("eng", model)
    assert 0.9 <= time.monotonic() - began < 5  # the grace (1 s), then SIGKILL
    assert pg.group_members(pid) == []
    assert "SIGTERM ignored" in "\n".join(driver.log_tail("eng"))


async def test_an_engine_that_dies_is_seen_and_restarted_with_a_new_pid(tmp_path: Path) -> None:
    exits: list[tuple[str, str]] = []
    d = LocalProcessDriver(
        tmp_path / "s",
        ProcessTable(tmp_path / "s" / "db"),
        LiveEndpoints(),
        on_exit=lambda m, why: exits.append((m, why)),
    )
    model = engine_model(
        "--exit-after",
        "0.5",
        "--exit-code",
        "7",
        restart="on-failure",
        restart_limit=2,
        restart_backoff_s=0.1,
    )
    try:
        await d.ensure_running("eng", model)
        first = d.processes()[0].pid
        for _ in range(100):
            await asyncio.sleep(0.05)
            if exits:
                break
        assert exits[0] == ("eng", "exited with code 7")
        for _ in range(100):
            await asyncio.sleep(0.05)
            info = d.processes()[0]
            if info.state == "ready" and info.pid != first:
                break
        assert info.pid != first and info.restarts == 1
        # It keeps dying: after restart_limit restarts the member is failed, not restarted forever.
        for _ in range(200):
            await asyncio.sleep(0.05)
            if d.processes()[0].state == "failed":
                break
        info = d.processes()[0]
        assert info.state == "failed" and "gave up after 2 restarts" in (info.last_exit or "")
        assert info.exits == 3
    finally:
        await d.aclose()


async def test_restart_never_leaves_a_dead_member_exited(driver: LocalProcessDriver) -> None:
    model = engine_model("--exit-after", "0.3", restart="never")
    await driver.ensure_running("eng", model)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if driver.processes()[0].state == "exited":
            break
    info = driver.processes()[0]
    assert info.state == "exited" and info.last_exit == "exited with code 1"
    assert "simulated crash" in "\n".join(info.log_tail)
    assert await driver.running({"eng": model}) == frozenset()


async def test_a_new_daemon_adopts_the_engines_of_a_killed_one_and_can_stop_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = LocalProcessDriver(state, ProcessTable(state / "stackd.db"), LiveEndpoints())
    model = engine_model()
    await first.ensure_running("eng", model)
    pid = first.processes()[0].pid
    assert pid is not None
    # The first daemon "dies": nothing of it runs any more, its engine does (no aclose).
    endpoints = LiveEndpoints()
    second = LocalProcessDriver(state, ProcessTable(state / "stackd.db"), endpoints)
    try:
        assert await second.running({"eng": model}) == {"eng"}
        assert second.processes()[0].pid == pid and endpoints.get("eng") is not None
        await second.ensure_running("eng", model)  # adopted and ready: nothing is restarted
        assert second.processes()[0].pid == pid
        await second.ensure_stopped("eng", model)
        assert not group_alive(pid)
    finally:
        await second.aclose()


async def test_records_of_dead_engines_are_dropped_and_unrecorded_ones_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = LocalProcessDriver(state, ProcessTable(state / "stackd.db"), LiveEndpoints())
    model = engine_model()
    await first.ensure_running("eng", model)
    await first.ensure_running("other", model)
    eng_pid, other_pid = (p.pid for p in first.processes())
    assert eng_pid is not None and other_pid is not None
    table = ProcessTable(state / "stackd.db")
    table.forget("other", other_pid)  # as if stackd died between spawn and record
    os.killpg(eng_pid, 9)  # and this engine died while no stackd ran
    await asyncio.sleep(0.3)
    second = LocalProcessDriver(state, ProcessTable(state / "stackd.db"), LiveEndpoints())
    try:
        assert await second.running({"eng": model, "other": model}) == frozenset()
        assert table.all() == []
        assert not group_alive(other_pid)
    finally:
        await second.aclose()
        await first.aclose()


async def test_a_fixed_port_in_use_is_refused_with_the_fix(driver: LocalProcessDriver) -> None:
    port = pg.free_port()
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        with pytest.raises(DriverFailed, match=rf"port {port} is already in use; .*unset process.port"):
            await driver.ensure_running("eng", engine_model(port=port))


async def test_model_package_is_assembled_once_into_the_state_dir(
    driver: LocalProcessDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "pkgs" / "fake_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent("""
        from pathlib import Path
        MODEL_NAME = "fake.gguf"
        CALLS = Path(__file__).with_name("calls")
        def assemble(output_path, overwrite=False):
            with CALLS.open("a") as f:
                f.write("x")
            Path(output_path).write_bytes(b"GGUF")
            return Path(output_path)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    model = engine_model(model_package="fake_gguf_pkg")
    await driver.ensure_running("eng", model)
    await driver.ensure_stopped("eng", model)
    await driver.ensure_running("eng", model)
    target = tmp_path / "state" / "models" / "fake_gguf_pkg" / "fake.gguf"
    assert target.read_bytes() == b"GGUF"
    assert (pkg / "calls").read_text() == "x"  # assembled once, not at every start
    await driver.ensure_stopped("eng", model)


async def test_a_missing_model_package_names_the_install_command(
    driver: LocalProcessDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hint outside a container (this test may run inside one): STACKD_IN_CONTAINER=0 says so.
    monkeypatch.setenv("STACKD_IN_CONTAINER", "0")
    with pytest.raises(DriverFailed, match=r"needs the Python package no_such_gguf_pkg.*\[local\]"):
        await driver.ensure_running("eng", engine_model(model_package="no_such_gguf_pkg"))


def test_cap_log_keeps_one_older_copy_and_truncates_in_place(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    with log.open("ab") as f:  # an engine's O_APPEND descriptor stays valid across the cut
        f.write(b"a" * 2000)
        f.flush()
        assert pg.cap_log(log, 1000)
        f.write(b"after\n")
    assert (tmp_path / "m.log.1").stat().st_size == 2000
    assert log.read_bytes() == b"after\n"
    assert not pg.cap_log(log, 1000)


def test_is_alive_checks_the_start_time_not_only_the_pid() -> None:
    me = psutil.Process()
    assert pg.is_alive(me.pid, me.create_time())
    assert not pg.is_alive(me.pid, me.create_time() - 100)  # same PID, another process's start


async def test_an_adopted_engine_that_dies_is_restarted_by_its_policy(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = LocalProcessDriver(state, ProcessTable(state / "stackd.db"), LiveEndpoints())
    model = engine_model(restart="on-failure", restart_backoff_s=0.1)
    await first.ensure_running("eng", model)
    pid = first.processes()[0].pid
    assert pid is not None
    second = LocalProcessDriver(state, ProcessTable(state / "stackd.db"), LiveEndpoints())
    try:
        assert await second.running({"eng": model}) == {"eng"}  # adopted; it learns its config here
        os.killpg(pid, 9)
        for _ in range(200):
            await asyncio.sleep(0.05)
            info = second.processes()[0]
            if info.state == "ready" and info.pid not in (None, pid):
                break
        assert info.state == "ready" and info.pid != pid and info.exits == 1
    finally:
        await second.aclose()
        await first.aclose()


async def test_an_engine_is_not_given_stackd_s_tokens_or_cloud_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKD_TOKEN", "canary-token")
    monkeypatch.setenv("GEMINI_API_KEY", "canary-key")
    monkeypatch.setenv("HF_HOME", "/models")  # an ordinary variable is inherited
    d = LocalProcessDriver(
        tmp_path / "s",
        ProcessTable(tmp_path / "s" / "db"),
        LiveEndpoints(),
        withheld_env=frozenset({"STACKD_TOKEN", "GEMINI_API_KEY"}),
    )
    try:
        await d.ensure_running("eng", engine_model())
        pid = d.processes()[0].pid
        assert pid is not None
        env = psutil.Process(pid).environ()
        assert "STACKD_TOKEN" not in env and "GEMINI_API_KEY" not in env
        assert env["HF_HOME"] == "/models" and env["STACKD_MEMBER"] == "eng"
    finally:
        await d.aclose()


async def test_a_warmup_answer_comes_before_ready(driver: LocalProcessDriver) -> None:
    """With process.warmup the member is ready only once a 1-token chat was answered: the engine's
    slow first answer is paid at start, not by the first caller."""
    cold = engine_model("--answer-after", "1.0")
    began = time.monotonic()
    await driver.ensure_running("cold", cold)
    assert time.monotonic() - began < 1.0  # the health path alone
    warm = engine_model("--answer-after", "1.0", warmup=True)
    began = time.monotonic()
    await driver.ensure_running("warm", warm)
    assert time.monotonic() - began >= 1.0
    assert {p.model: p.state for p in driver.processes()} == {"cold": "ready", "warm": "ready"}
    await driver.ensure_stopped("cold", cold)
    await driver.ensure_stopped("warm", warm)


async def test_an_engine_that_cannot_answer_its_warmup_fails_the_start_naming_it(
    driver: LocalProcessDriver,
) -> None:
    model = engine_model("--answer-after", "30", start_timeout_s=1.5, warmup=True)
    with pytest.raises(DriverFailed) as failed:
        await driver.ensure_running("eng", model)
    assert "not a 1-token warm-up chat" in failed.value.message
    assert "process.warmup: false" in failed.value.message
    assert driver.processes()[0].state == "failed"
