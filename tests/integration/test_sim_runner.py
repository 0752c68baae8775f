"""``run_sim`` serves in its own process until SIGTERM, and its fault changes over /_sim/fault;
``stackd sim demo`` serves every simulator a config points at."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from stackd.config.loader import load_config
from stackd.config.secrets import Secrets
from stackd.drivers.remote import HttpRemoteProber

DEMO = Path(__file__).resolve().parents[2] / "config" / "examples" / "demo.yaml"


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


def test_sim_demo_serves_every_simulator_the_demo_config_points_at(tmp_path: Path) -> None:
    """``stackd sim demo --config demo.yaml``: one line per simulator with its URL, every cloud member
    of the demo reachable through stackd's own prober (none degraded), and a clean SIGTERM."""
    raw = yaml.safe_load(DEMO.read_text())
    ports = {}
    for name, model in raw["models"].items():  # the demo's own 8300-8303 may be taken on this machine
        if model["runtime"] == "remote":
            ports[name] = _free_port()
            model["endpoint"] = model["endpoint"].replace(
                f":{urlsplit(model['endpoint']).port}", f":{ports[name]}"
            )
    assert len(ports) == 4
    config_path = tmp_path / "demo.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    ollama_port = _free_port()
    env = {**os.environ, "OLLAMA_HOST": f"http://127.0.0.1:{ollama_port}", "STACKD_DEMO_API_KEY": "demo"}
    command = [sys.executable, "-m", "stackd.cli", "sim", "demo", "--config", str(config_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(5)]
        urls = {line.split(" listening on ")[1].split()[0] for line in lines}
        assert urls == {f"http://127.0.0.1:{p}" for p in [*ports.values(), ollama_port]}, lines
        assert any(line.startswith("stackd sim ollama listening on") for line in lines), lines
        config = load_config(config_path, env)
        prober = HttpRemoteProber(secrets=Secrets(env), total_timeout_s=5)
        for name in ports:  # raises DriverUnavailable for a member that would show degraded
            asyncio.run(prober.probe(name, config.models[name]))
        models = httpx.get(f"http://127.0.0.1:{ports['deepseek-r1-cloud']}/v1/models", timeout=5).json()
        assert [m["id"] for m in models["data"]] == ["deepseek-r1:14b"]  # the served model, by name
        assert httpx.get(f"http://127.0.0.1:{ollama_port}/api/tags", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()
