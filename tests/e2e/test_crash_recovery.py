"""SIGKILL of a real ``stackd serve`` in the middle of a switch, then a restart on the same state.

Done-when of issue 3: the restarted daemon reaches a consistent state — exactly the target or
exactly the previous stack (``docker ps``, the Ollama simulator's ``/api/ps``, ``/roles``,
``/model-stacks``), every role bound to a backend that answers its health check — and says what
it did in ``/status`` (``recovery``). Kill points: during a slow pull, right after the first
container started, during the health wait of a later member (one that gets ready, one that never
does), and after the role swap while the old stack is being stopped.

Issue 11, for process members (the demo's orchestrator is an engine process: Gemma 3 270M on
llama.cpp's server): kill points also right after the engine got ready, while it loads (spawned,
not yet answering), and while it is being stopped. An engine outlives a SIGKILLed daemon (it leads
its own process group); after the restart no engine is lost or duplicated: the recorded engine
is adopted (the same PID and start time, never a second one beside it) or stopped, as recovery
decides, at most one engine runs per member, ``/status`` names the PID the OS shows, and the
final daemon's shutdown stops every engine, adopted ones too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import stop_daemon
from tests.e2e.daemon_process import Event, follow_until, get, kill, start_demo_daemon, submit_switch
from tests.integration.conftest import demo_image, docker_engine  # noqa: F401  (fixtures)
from tests.integration.demo_world import (  # noqa: F401  (fixtures)
    DemoWorld,
    ModelChange,
    WorldFactory,
    demo_worlds,
    engines_in_status,
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
    until: Callable[[DemoWorld], bool] | None = None  # then, also wait until this holds
    changes: dict[str, ModelChange] = field(default_factory=dict)
    pull_chunk_interval_ms: float = 0.0
    outcome: str | None = None  # the stack recovery must end on, when the kill point decides it


KILL_POINTS = [
    KillPoint(
        "during a slow pull",
        "cloud-offload",
        "elastic-hybrid",
        lambda e: e["type"] == "pull_progress" and bool(e.get("completed")),
        pull_chunk_interval_ms=100,
        outcome="cloud-offload",
    ),
    KillPoint(
        "after the first container started",
        "ollama-only",
        "cloud-offload",
        is_step("step_done", "start_container"),
        changes=SLOW_START,
    ),
    KillPoint(
        "during the health wait of a later member",
        "ollama-hybrid",
        "cloud-offload",
        is_step("step_started", "start_container", "embeddings-nomic"),
        after_s=1.0,
        changes=SLOW_START,
    ),
    # Recovery finds the half-started container running but never ready: it must roll back.
    KillPoint(
        "during the health wait of a member that never gets ready",
        "ollama-hybrid",
        "cloud-offload",
        is_step("step_started", "start_container", "embeddings-nomic"),
        after_s=1.0,
        changes=NEVER_READY,
        outcome="ollama-hybrid",
    ),
    KillPoint(
        "after the role swap, while the old stack stops",
        "cloud-offload",
        "ollama-only",
        lambda e: e["type"] == "roles_swapped",
        outcome="ollama-only",
    ),
    # Process members. The engine is ready and journalled, the target's containers are not: the
    # engine is adopted, then kept (recovery finishes) or stopped (it rolls back).
    KillPoint(
        "after the engine process got ready",
        "ollama-only",
        "cloud-offload",
        is_step("step_done", "start_process", "orchestrator-8b"),
        changes=SLOW_START,
    ),
    # Spawned (and, a moment later, journalled) but not answering yet: the target is incomplete.
    KillPoint(
        "while the engine process loads",
        "ollama-only",
        "cloud-offload",
        is_step("step_started", "start_process", "orchestrator-8b"),
        until=lambda world: bool(world.running_engines()),
        outcome="ollama-only",
    ),
    KillPoint(
        "while the engine process stops",
        "cloud-offload",
        "ollama-only",
        is_step("step_started", "stop_process", "orchestrator-8b"),
        outcome="ollama-only",
    ),
    # The engine is in both stacks: it must outlive the kill and be adopted, not started again.
    KillPoint(
        "with an engine that both stacks keep",
        "ollama-hybrid",
        "elastic-hybrid",
        lambda e: e["type"] == "pull_progress" and bool(e.get("completed")),
        pull_chunk_interval_ms=100,
        outcome="ollama-hybrid",
    ),
]


def assert_consistent(world: DemoWorld, url: str, switch_id: str, previous: str, target: str) -> str:
    """Exactly one of the two stacks runs, the API agrees, and recovery told what it did."""
    active = httpx.get(f"{url}/model-stacks", timeout=10).json()["active"]
    assert active in (previous, target)
    assert world.differences(active) == []  # engine processes too: those of active, one per member
    roles = httpx.get(f"{url}/roles", timeout=10).json()
    assert roles["stack"] == active
    assert {r["role"]: r["model"] for r in roles["roles"]} == world.roles_of(active)
    for row in roles["roles"]:  # local backends: a cloud member's reachability is a probe, not a URL
        model = world.config.models[row["model"]]
        if model.lifecycle.value == "always_on" and model.runtime.value != "remote":
            answer = httpx.get(row["health_url"], timeout=5)
            assert answer.status_code < 300, f"{row['role']} -> {row['model']}: {answer.status_code}"
    status = httpx.get(f"{url}/status", timeout=10).json()
    assert engines_in_status(status) == {m: pid for m, (pid, _) in world.engine_starts().items()}
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
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
    point: KillPoint,
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
        wait_until(point.until, world)
    finally:
        kill(daemon)
    world.sims.ollama.control.chunk_interval_ms = 0.0
    orphans = world.engine_starts()  # engines outlive their daemon's SIGKILL

    started = time.monotonic()
    daemon = start_demo_daemon(world, tmp_path, 2)
    try:
        active = assert_consistent(world, daemon.url, switch_id, point.previous, point.target)
        if point.outcome is not None:
            assert active == point.outcome
        assert time.monotonic() - started < 30
        engines = world.engine_starts()
        for member, engine in engines.items():  # adopted, never started again beside the orphan
            assert orphans.get(member, engine) == engine, (
                f"{member}: {orphans[member]} was replaced by {engine}"
            )
    finally:
        stop_daemon(daemon)  # SIGTERM: it stops its engines, adopted ones too
    assert world.running_engines() == {}, "the daemon stopped; an engine lives on"


def wait_until(
    condition: Callable[[DemoWorld], bool] | None, world: DemoWorld, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while condition is not None and not condition(world):
        assert time.monotonic() < deadline, "the kill point's condition never held"
        time.sleep(0.01)
