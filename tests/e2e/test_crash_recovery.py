"""SIGKILL of a real ``stackd serve`` in the middle of a switch, then a restart on the same state.

Done-when of issue 3: the restarted daemon reaches a consistent state — exactly the target or
exactly the previous stack (``docker ps``, the Ollama simulator's ``/api/ps``, ``/roles``,
``/model-stacks``), every role bound to a backend that answers its health check — and says what
it did in ``/status`` (``recovery``). Kill points: during a slow pull, right after the first
container started, during the health wait of a later member (one that gets ready, one that never
does), and after the role swap while the old stack is being stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.daemon_process import Event, follow_until, get, kill, start_demo_daemon, submit_switch
from tests.integration.conftest import demo_image, docker_engine  # noqa: F401  (fixtures)
from tests.integration.demo_world import (  # noqa: F401  (fixtures)
    DemoWorld,
    ModelChange,
    WorldFactory,
    demo_worlds,
    sims,
)

pytestmark = pytest.mark.docker

SLOW_START = {"embeddings-nomic": ModelChange(env={"STARTUP_DELAY_S": "5"})}
NEVER_READY = {"embeddings-nomic": ModelChange(env={"FAIL_HEALTH": "1"}, start_timeout_s=4)}


def is_step(type_: str, kind: str, model: str | None = None) -> Callable[[Event], bool]:
    def wanted(event: Event) -> bool:
        step = event.get("step") or {}
        return event["type"] == type_ and step.get("kind") == kind and model in (None, step.get("model"))

    return wanted


@dataclass(frozen=True)
class KillPoint:
    name: str
    previous: str
    target: str
    wanted: Callable[[Event], bool]
    after_s: float = 0.0  # wait this long after the wanted event before the kill
    changes: dict[str, ModelChange] = field(default_factory=dict)
    pull_chunk_interval_ms: float = 0.0
    outcome: str | None = None  # the stack recovery must end on, when the kill point decides it


KILL_POINTS = [
    KillPoint("during a slow pull", "cloud-offload", "elastic-hybrid",
              lambda e: e["type"] == "pull_progress" and bool(e.get("completed")),
              pull_chunk_interval_ms=100, outcome="cloud-offload"),
    KillPoint("after the first container started", "ollama-only", "cloud-offload",
              is_step("step_done", "start_container"), changes=SLOW_START),
    KillPoint("during the health wait of a later member", "ollama-hybrid", "cloud-offload",
              is_step("step_started", "start_container", "embeddings-nomic"), after_s=1.0, changes=SLOW_START),
    # Recovery finds the half-started container running but never ready: it must roll back.
    KillPoint("during the health wait of a member that never gets ready", "ollama-hybrid", "cloud-offload",
              is_step("step_started", "start_container", "embeddings-nomic"), after_s=1.0, changes=NEVER_READY,
              outcome="ollama-hybrid"),
    KillPoint("after the role swap, while the old stack stops", "cloud-offload", "ollama-only",
              lambda e: e["type"] == "roles_swapped", outcome="ollama-only"),
]


def assert_consistent(world: DemoWorld, url: str, switch_id: str, previous: str, target: str) -> str:
    """Exactly one of the two stacks runs, the API agrees, and recovery told what it did."""
    active = httpx.get(f"{url}/model-stacks", timeout=10).json()["active"]
    assert active in (previous, target)
    assert world.differences(active) == []
    roles = httpx.get(f"{url}/roles", timeout=10).json()
    assert roles["stack"] == active
    assert {r["role"]: r["model"] for r in roles["roles"]} == world.roles_of(active)
    for row in roles["roles"]:  # local backends: a cloud member's reachability is a probe, not a URL
        model = world.config.models[row["model"]]
        if model.lifecycle.value == "always_on" and model.runtime.value != "remote":
            answer = httpx.get(row["health_url"], timeout=5)
            assert answer.status_code < 300, f"{row['role']} -> {row['model']}: {answer.status_code}"
    status = httpx.get(f"{url}/status", timeout=10).json()
    recovery = status["recovery_detail"]
    assert recovery["switch_id"] == switch_id and recovery["stack"] == active, recovery
    expected = "rolled_back" if active == previous else "finished"
    assert recovery["action"] == expected, recovery
    assert switch_id in status["recovery"] and status["drift"] == []
    assert (expected.replace("_", " ") if expected == "rolled_back" else "finished it") in status["recovery"]
    record = httpx.get(f"{url}/model-stacks/switch/{switch_id}", timeout=10).json()
    assert (record["kind"], record["state"], record["note"]) == ("recovery", "succeeded", status["recovery"])
    return str(active)


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.name for p in KILL_POINTS])
def test_a_daemon_killed_mid_switch_recovers_to_a_consistent_stack(
    demo_worlds: WorldFactory, tmp_path: Path, point: KillPoint,  # noqa: F811
) -> None:
    world = demo_worlds(point.changes, point.previous)
    daemon = start_demo_daemon(world, tmp_path, 1)
    try:
        assert get(daemon, "/model-stacks")["active"] == point.previous
        assert world.differences(point.previous) == []
        world.sims.ollama.control.chunk_interval_ms = point.pull_chunk_interval_ms
        switch_id = submit_switch(daemon, point.target)
        follow_until(daemon, switch_id, point.wanted)
        time.sleep(point.after_s)
    finally:
        kill(daemon)
    world.sims.ollama.control.chunk_interval_ms = 0.0

    started = time.monotonic()
    daemon = start_demo_daemon(world, tmp_path, 2)
    try:
        active = assert_consistent(world, daemon.url, switch_id, point.previous, point.target)
        if point.outcome is not None:
            assert active == point.outcome
        assert time.monotonic() - started < 30
    finally:
        daemon.proc.terminate()
        daemon.proc.wait(10)
