"""Run the CLI and the daemon as a user does: as processes, over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
STACKD = [sys.executable, "-m", "stackd.cli"]
# One stack of one remote member (a simulator's URL in {url}): a daemon that starts in a second,
# for the tests of what surrounds a call (keys, durability), not of the engines.
SOLO_REMOTE_CONFIG = """
default_stack: solo
roles:
  orchestrator: {{required: true}}
models:
  local:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: {url}/v1
    remote: {{}}
stacks:
  solo:
    roles: {{orchestrator: local}}
reason:
  strategies:
    local: {{role: orchestrator}}
  default_chain: [local]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    url: str
    state_dir: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env, check=check)

    @property
    def token(self) -> str:
        return (self.state_dir / "token").read_text().strip()


def run_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACKD, *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        text=True,
        capture_output=True,
        timeout=60,
        check=check,
    )


def start_daemon(
    tmp: Path, *extra: str, config: str = "config/model-stacks.yaml", env_extra: dict[str, str] | None = None
) -> Daemon:
    port = free_port()
    state = tmp / "state"
    env = {
        **os.environ,
        "STACKD_URL": f"http://127.0.0.1:{port}",
        "STACKD_STATE_DIR": str(state),
        "COLUMNS": "200",
        **(env_extra or {}),
    }
    env.pop("STACKD_TOKEN", None)
    log = open(tmp / "daemon.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [*STACKD, "serve", "--port", str(port), "--config", config, "--state-dir", str(state), *extra],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited: {(tmp / 'daemon.log').read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Daemon(url, state, proc, env)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"daemon did not start: {(tmp / 'daemon.log').read_text()}")


def stop_daemon(daemon: Daemon) -> None:
    daemon.proc.terminate()
    try:
        daemon.proc.wait(10)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.proc.wait(5)


def readme_daemon(tmp: Path) -> Iterator[Daemon]:
    """The README's daemon: bundled config, the scripted RTX 5090, no periodic jobs. It starts on
    the default stack: with no engine for it, that first switch fails and is reported, never fatal."""
    d = start_daemon(
        tmp,
        "--gpu-scenario",
        "config/examples/gpu-rtx5090.yaml",
        "--no-periodic",
        env_extra={
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        },
    )
    try:
        yield d
    finally:
        stop_daemon(d)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    yield from readme_daemon(tmp_path)


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One README daemon for a module whose tests only read it, dry-run or make a switch that
    fails and rolls back (issue 25: a daemon start costs seconds on a loaded machine)."""
    yield from readme_daemon(tmp_path_factory.mktemp("daemon"))
