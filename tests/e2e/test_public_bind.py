"""The public-bind promise, on a real ``stackd serve``: refused without a token, having written
nothing; with one, every endpoint but /healthz needs it; the state stays private.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, STACKD, free_port

TOKEN = "a-long-random-secret-for-the-public-bind-test"
ENGINES_AWAY = {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "OLLAMA_HOST": "http://127.0.0.1:9"}


def serve(state: Path, port: int, token: str | None, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **ENGINES_AWAY}
    env.pop("STACKD_TOKEN", None)
    if token is not None:
        env["STACKD_TOKEN"] = token
    command = [
        *STACKD,
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--state-dir",
        str(state),
        "--gpu-scenario",
        "config/examples/gpu-rtx5090.yaml",
        "--no-periodic",
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_without_a_token_the_start_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = serve(state, free_port(), None, tmp_path / "daemon.log")
    assert proc.wait(30) == 1
    said = (tmp_path / "daemon.log").read_text()
    assert said.startswith("UnsafeBind: refusing to listen on 0.0.0.0 without a token"), said
    assert "Traceback" not in said
    assert not state.exists()  # no token file, no lock file, no database: not even the dir


@pytest.fixture(scope="module")
def public_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One daemon on 0.0.0.0 with STACKD_TOKEN for the whole module: starting one takes seconds."""
    tmp_path = tmp_path_factory.mktemp("public")
    state, port = tmp_path / "state", free_port()
    proc = serve(state, port, TOKEN, tmp_path / "daemon.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.1)
        yield url, state
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize(
    "path",
    [
        "/openapi.json",
        "/docs",
        "/redoc",
        "/status",
        "/model-stacks",
        "/metrics",
        "/roles",
        "/usage",
        "/leases",
        "/v1/models",
        "/tools",
    ],
)
def test_with_a_token_every_endpoint_but_healthz_needs_it(public_daemon: tuple[str, Path], path: str) -> None:
    url, _ = public_daemon
    assert httpx.get(f"{url}{path}", timeout=10).status_code == 401
    assert httpx.get(f"{url}{path}", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    answer = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_healthz_is_open_and_says_only_that_it_is_alive(public_daemon: tuple[str, Path]) -> None:
    url, _ = public_daemon
    health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["pid"] is None and health["state_dir"] is None


def test_the_state_is_private(public_daemon: tuple[str, Path]) -> None:
    _, state = public_daemon
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir() if p.is_file()}
    assert "stackd.db" in files and "stackd.lock" in files and "token" not in files  # STACKD_TOKEN: no file
    assert {name: mode for name, mode in files.items() if name.startswith("stackd.")} == dict.fromkeys(
        [n for n in files if n.startswith("stackd.")], 0o600
    )
