"""Two daemons never fight (issue 12, item 2).

A second ``stackd serve`` on the state dir or the port of a running one exits 1 with one line
that names the running daemon (its PID and URL), and changes nothing: no engine is reached (the
config's one member is a remote whose every request this test counts), the running daemon's
stack, role table and database stay as they were, and a fresh state dir gets no database.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ROOT, STACKD, Daemon, free_port, start_daemon, stop_daemon

REFUSAL_BOUND_S = 10.0
NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
NO_GPU = ("--no-periodic", "--gpu-scenario", "config/examples/gpu-rtx5090.yaml")

CONFIG = """\
version: 1
default_stack: cloud
roles:
  orchestrator: {required: true}
models:
  far-away:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: http://127.0.0.1:%d/v1
    remote: {}
stacks:
  cloud:
    roles: {orchestrator: far-away}
"""


class CountingRemote(ThreadingHTTPServer):
    """An OpenAI-compatible model list that counts the requests it gets: the daemon's engine."""

    requests = 0

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ModelList)


class _ModelList(BaseHTTPRequestHandler):
    server: CountingRemote

    def do_GET(self) -> None:
        self.server.requests += 1
        body = json.dumps({"object": "list", "data": [{"id": "far-away", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[CountingRemote]:
    server = CountingRemote()
    thread = threading.Thread(target=server.serve_forever, name="counting-remote", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def start(tmp: Path) -> Daemon:
    """``stackd serve`` on ``tmp/state`` with the config ``tmp/one-remote.yaml``; no Docker, no GPU."""
    return start_daemon(tmp, *NO_GPU, config=str(tmp / "one-remote.yaml"), env_extra=NO_DOCKER)


@pytest.fixture
def first(tmp_path: Path, remote: CountingRemote) -> Iterator[Daemon]:
    (tmp_path / "one-remote.yaml").write_text(CONFIG % remote.server_address[1])
    daemon = start(tmp_path)
    yield daemon
    stop_daemon(daemon)


def serve(first: Daemon, *, port: int, state_dir: Path) -> tuple[int, list[str]]:
    """``stackd serve`` with the first daemon's config: its exit code and its output lines. It
    must end within ``REFUSAL_BOUND_S``."""
    config = first.state_dir.parent / "one-remote.yaml"
    args = ["serve", "--port", str(port), "--state-dir", str(state_dir), "--config", str(config), *NO_GPU]
    try:
        done = subprocess.run(
            [*STACKD, *args], cwd=ROOT, env=first.env, text=True, capture_output=True, timeout=REFUSAL_BOUND_S
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        pytest.fail(f"the second daemon was still running after {REFUSAL_BOUND_S:g} s: {exc.stdout!r}")
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines


def observed(first: Daemon, remote: CountingRemote) -> dict[str, Any]:
    """What a second daemon must not change: the first one's stack and role table, its latest
    switch, its database files, and how often its engine was reached."""
    status = httpx.get(f"{first.url}/status", timeout=10).json()
    files = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in first.state_dir.glob("stackd.db*")}
    return {
        "active_stack": status["active_stack"],
        "roles": status["roles"],
        "roles_version": status["roles_version"],
        "last_switch": status["last_switch"]["switch_id"],
        "db": files,
        "remote_requests": remote.requests,
    }


def pid_and_url(first: Daemon) -> tuple[str, str]:
    return f"pid {first.proc.pid}", first.url


def test_a_second_daemon_on_the_same_state_dir_is_refused_and_changes_nothing(
    first: Daemon, remote: CountingRemote
) -> None:
    before = observed(first, remote)
    assert before["remote_requests"] > 0, "the first daemon applied its stack"

    code, lines = serve(first, port=free_port(), state_dir=first.state_dir)

    assert code == 1
    assert len(lines) == 1, lines
    pid, url = pid_and_url(first)
    assert lines[0] == (
        f"StateDirLocked: another stackd ({pid}, {url}) holds {first.state_dir}; "
        "stop it first or pass --state-dir"
    )
    assert observed(first, remote) == before


def test_a_second_daemon_on_the_same_port_is_refused_and_changes_nothing(
    first: Daemon, remote: CountingRemote, tmp_path: Path
) -> None:
    before = observed(first, remote)
    other_state = tmp_path / "other-state"
    port = int(first.url.rsplit(":", 1)[1])

    code, lines = serve(first, port=port, state_dir=other_state)

    assert code == 1
    assert len(lines) == 1, lines
    pid, url = pid_and_url(first)
    assert lines[0] == (
        f"PortInUse: port {port} on 127.0.0.1 is in use by stackd {pid} ({url}, state {first.state_dir}); "
        "stop it first or pass --port"
    )
    assert "Traceback" not in lines[0]
    assert observed(first, remote) == before
    # No database, no token: only the lock file the refused daemon took before it tried the port.
    assert sorted(p.name for p in other_state.iterdir()) == ["stackd.lock"]


def test_both_at_once_the_state_dir_is_named(first: Daemon, remote: CountingRemote) -> None:
    """The plain second ``stackd serve``: the same state dir and the same port."""
    before = observed(first, remote)
    port = int(first.url.rsplit(":", 1)[1])

    code, lines = serve(first, port=port, state_dir=first.state_dir)

    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"StateDirLocked: another stackd (pid {first.proc.pid}, {first.url})")
    assert observed(first, remote) == before


def test_the_lock_dies_with_the_daemon(first: Daemon, remote: CountingRemote, tmp_path: Path) -> None:
    """A SIGKILLed daemon leaves its lock file behind; the next start takes it over."""
    first.proc.kill()
    first.proc.wait(10)
    (tmp_path / "daemon.log").rename(tmp_path / "daemon-killed.log")

    again = start(tmp_path)
    try:
        record = json.loads((again.state_dir / "stackd.lock").read_text())
        assert record == {"pid": again.proc.pid, "url": again.url}
    finally:
        stop_daemon(again)
