"""``stackd serve --detach``, ``stackd ps`` and ``stackd logs`` as an operator runs them on a bare
machine (the embedded stack: SmolLM2-135M-Instruct on llama.cpp's server, a real engine).

The detach hint repeats the state dir and the address that were given (a bare ``stackd stop``
looks at another daemon); ``ps`` shows the engine's real PID, port, uptime, restarts and
memory; ``logs`` with no member prints the daemon's own log; the hint's stop command stops it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import ROOT, STACKD, free_port
from tests.e2e.test_embedded_stack import bare_machine_env

pytestmark = pytest.mark.llm


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACKD, *args], cwd=ROOT, env=env, text=True, capture_output=True, timeout=timeout, check=False
    )


def wait_until_active(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/status", timeout=5).json().get("active_stack"):
            return
        time.sleep(0.5)
    raise AssertionError(f"no active stack at {url} within {timeout_s} s")


def test_detach_hint_ps_and_the_daemons_log(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    env = bare_machine_env(tmp_path, free_port())  # STACKD_PORT names another port: --port must win
    served = cli(env, "serve", "--detach", "--no-periodic", "--state-dir", str(state), "--port", str(port))
    assert served.returncode == 0, served.stdout + served.stderr
    url = f"http://127.0.0.1:{port}"
    hint = served.stdout.split("stop it with: ")[1].strip()
    assert hint == f"stackd stop --state-dir {state} --url {url}", served.stdout
    stop = [*STACKD, *shlex.split(hint)[1:]]
    try:
        wait_until_active(url)
        ps_json = json.loads(cli(env, "ps", "--json", "--url", url, "--state-dir", str(state)).stdout)
        engines = [m for m in ps_json["members"] if m["pid"]]
        assert engines, ps_json
        engine = engines[0]
        assert psutil.pid_exists(engine["pid"]) and engine["port"] and engine["restarts"] == 0
        assert engine["state"] == "running" and engine["uptime_s"] is not None and engine["measured_mib"]
        text = cli({**env, "COLUMNS": "120"}, "ps", "--url", url, "--state-dir", str(state)).stdout
        row = next(line for line in text.splitlines() if line.split()[:1] == [engine["name"]])
        assert row.split()[1:3] == [str(engine["pid"]), str(engine["port"])], text
        assert "RAM" in row and "running" in row, text

        logs = cli(env, "logs", "--state-dir", str(state), "-n", "5")
        assert logs.returncode == 0, logs.stderr
        lines = logs.stdout.splitlines()
        assert 0 < len(lines) <= 5 and lines == (state / "stackd.log").read_text().splitlines()[-len(lines) :]
    finally:
        stopped = subprocess.run(
            stop, cwd=ROOT, env=env, text=True, capture_output=True, timeout=90, check=False
        )
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped stackd"), stopped.stderr


def test_logs_without_a_file_says_where_the_daemon_logs(tmp_path: Path) -> None:
    env = bare_machine_env(tmp_path, free_port())
    done = cli(env, "logs", "--state-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith(f"NotFound: no daemon log at {tmp_path / 'stackd.log'}"), done.stderr
    assert "journalctl -u stackd" in done.stderr
