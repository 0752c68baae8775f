"""``run_sim`` serves in its own process until SIGTERM, and its fault changes over /_sim/fault."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_sim_serves_until_sigterm_and_takes_fault_changes() -> None:
    port = _free_port()
    code = f"from stackd.sim import run_sim; run_sim('openai', '127.0.0.1', {port}, 0, 'http500')"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in banner
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/v1/models", timeout=5).status_code == 500
        changed = httpx.post(url + "/_sim/fault", json={"fault": "none", "latency_ms": 1}, timeout=5)
        assert changed.json()["fault"] == "none"
        assert httpx.get(url + "/v1/models", timeout=5).json()["data"][0]["id"] == "sim-model"
        assert httpx.get(url + "/_sim/state", timeout=5).json()["latency_ms"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()
