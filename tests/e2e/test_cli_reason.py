"""`stackd reason` and `stackd usage` as a user runs them, against a daemon whose backends are
OpenAI-compatible simulators on loopback (one of them refusing connections)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackd.sim import Fault, OpenAISim
from tests.e2e.conftest import Daemon, start_daemon, stop_daemon

CONFIG = """
default_stack: solo
roles:
  orchestrator: {{required: true}}
  deep_reasoning: {{}}
models:
  cloud-r1:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: {down}/v1
    remote: {{}}
  local-orchestrator:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: {up}/v1
    remote: {{}}
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
stacks:
  solo:
    roles: {{orchestrator: local-orchestrator, deep_reasoning: cloud-r1}}
reason:
  strategies:
    cloud_gpu: {{role: deep_reasoning}}
    local_scheduler: {{role: orchestrator, queued: true}}
  default_chain: [cloud_gpu, local_scheduler]
"""


@pytest.fixture
def reason_daemon(tmp_path: Path) -> Iterator[Daemon]:
    with OpenAISim.start_in_thread() as up, OpenAISim.start_in_thread() as down:
        down.set_fault(Fault.refuse)
        config = tmp_path / "stacks.yaml"
        config.write_text(CONFIG.format(up=up.url, down=down.url))
        daemon = start_daemon(tmp_path, "--no-periodic", config=str(config))
        yield daemon
        stop_daemon(daemon)


def test_reason_prints_the_answer_and_the_attempts(reason_daemon: Daemon) -> None:
    result = reason_daemon.cli("reason", "Why is the sky blue?", "--effort", "9")
    assert result.returncode == 0, result.stderr
    assert "Hello from the stackd simulator." in result.stdout
    assert "cloud_gpu" in result.stdout and "failed" in result.stdout  # the refused strategy, recorded
    assert "answered" in result.stdout and "local-orchestrator" in result.stdout

    as_json = json.loads(reason_daemon.cli("reason", "again", "--json").stdout)
    statuses = [(a["strategy"], a["status"]) for a in as_json["attempts"]]
    assert statuses == [("cloud_gpu", "failed"), ("local_scheduler", "answered")]


def test_reason_streams(reason_daemon: Daemon) -> None:
    result = reason_daemon.cli("reason", "stream please", "--stream")
    assert result.returncode == 0, result.stderr
    assert "Hello from the stackd simulator." in result.stdout and "answered" in result.stdout


def test_usage_counts_what_reason_did(reason_daemon: Daemon) -> None:
    import time

    assert reason_daemon.cli("reason", "count me").returncode == 0
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    while time.monotonic() < deadline and not rows:
        rows = json.loads(reason_daemon.cli("usage", "--json").stdout)["rows"]
        time.sleep(0.3)  # usage is flushed to SQLite about once a second
    by_backend = {r["backend"]: r for r in rows}
    assert by_backend["local-orchestrator"]["requests"] >= 1
    assert by_backend["cloud-r1"]["failures"].get("refused", 0) >= 1
    table = reason_daemon.cli("usage")
    assert table.returncode == 0 and "local-orchestrator" in table.stdout and "refused 1" in table.stdout
