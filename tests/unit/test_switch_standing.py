"""A switch's last words say what is true when it answers (issue 22).

On a real swarm with a node killed mid-switch, the rollback said "'gamma' is running as before"
while one of gamma's members was degraded on the dead node, and a switch said "succeeded" while
its new member's node was already down. Here the same stacks run on the in-memory world: a
member "on a dead node" is one whose health probe fails (``MemoryHealth.unhealthy``), as the
cluster's health checker fails a member whose node is down or whose endpoint does not answer.
The real swarm runs the same story in tests/integration/test_swarm.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackd.config.loader import load_config
from stackd.config.models import StacksConfig
from stackd.manager import ModelStackManager
from stackd.manager.standing import commit_words, rollback_words
from tests.unit.test_manager_world import World, close_all, make_world

NODE3_DOWN = "node node3 is down; Swarm reschedules 'sw-emb-3'"
STACKS = {
    "alpha": {"orchestrator": "orch-1", "embeddings": "emb-1"},
    "gamma": {"orchestrator": "orch-1", "embeddings": "emb-3"},
    "delta": {"orchestrator": "orch-3", "embeddings": "emb-1"},
}


def member(name: str, port: int) -> dict[str, Any]:
    return {
        "runtime": "docker",
        "placement": "cpu",
        "api": "openai",
        "endpoint": f"http://127.0.0.1:{port}/v1",
        "memory_gb": 1,
        "health": {"path": "/health", "timeout_s": 2},
        "docker": {
            "container": f"sw-{name}",
            "spec": {"image": "demo:1", "ports": {"8000/tcp": port}},
            "swarm": {"constraints": [f"node.hostname==node{name[-1]}"]},
        },
    }


def swarm_config(tmp_path: Path) -> StacksConfig:
    data = {
        "version": 1,
        "default_stack": "gamma",
        "cluster": {"docker_host": "unix:///run/swarm.sock"},
        "roles": {"orchestrator": {"required": True}, "embeddings": {}},
        "models": {n: member(n, 18200 + i) for i, n in enumerate(["orch-1", "orch-3", "emb-1", "emb-3"])},
        "stacks": {name: {"roles": roles} for name, roles in STACKS.items()},
    }
    path = tmp_path / "swarm-stacks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path, env={})


class DeadNode:
    """Node 3 is killed: its members stop answering, and a start on it fails as Swarm's would."""

    def __init__(self, world: World) -> None:
        self.world = world

    def kill(self) -> None:
        for name in ("orch-3", "emb-3"):
            self.world.health.unhealthy.add(name)
        self.world.containers.fail_start.add("orch-3")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    built = make_world(tmp_path, swarm_config(tmp_path))
    yield built
    await close_all(built)


async def switch(manager: ModelStackManager, stack: str) -> dict[str, Any]:
    handle = await manager.submit_switch(stack)
    await handle.wait()
    return manager.get_switch(handle.id).to_json()  # the JSON the API answers


async def on_gamma(world: World) -> ModelStackManager:
    manager = world.manager()
    assert (await switch(manager, "gamma"))["state"] == "succeeded"
    return manager


async def test_a_rollback_onto_a_dead_node_names_the_degraded_member_not_running_as_before(
    world: World,
) -> None:
    manager = await on_gamma(world)
    DeadNode(world).kill()  # mid-switch, as far as gamma -> delta can tell
    result = await switch(manager, "delta")
    assert result["state"] == "rolled_back", result
    error = result["error"]
    assert "running as before" not in error, error
    assert error.endswith(
        "'gamma' is back but degraded: emb-3 is degraded (emb-3: health endpoint answered 503 "
        "(injected failure)); orch-1 answers"
    ), error
    # Status says the same thing at once, not at the next periodic probe.
    assert manager.unavailable("emb-3") == "emb-3: health endpoint answered 503 (injected failure)"
    assert manager.unavailable("orch-1") is None


async def test_a_new_member_whose_node_dies_before_the_commit_fails_the_switch(world: World) -> None:
    manager = await on_gamma(world)

    def node1_dies_after_the_start(verb: str, name: str) -> None:
        if (verb, name) == ("start", "emb-1"):
            world.health.unhealthy.add("emb-1")

    world.containers.after_action = node1_dies_after_the_start
    result = await switch(manager, "alpha")
    assert result["state"] == "rolled_back", result
    assert result["error"].startswith(
        "start_container emb-1 (sw-emb-1) failed: it no longer answered when the switch was to commit: "
        "emb-1: health endpoint answered 503 (injected failure); undone: "
    ), result["error"]
    assert result["error"].endswith("'gamma' is running as before (emb-3, orch-1 answer)")
    assert manager.active_stack == "gamma"
    assert "sw-emb-1" not in world.containers.running_containers
    assert manager.live_roles.current.bindings["embeddings"] == "emb-3"


async def test_a_commit_with_a_kept_member_down_succeeds_and_says_which(world: World) -> None:
    manager = await on_gamma(world)
    world.health.unhealthy.add("orch-1")  # kept by gamma -> alpha: the switch did not break it
    result = await switch(manager, "alpha")
    assert result["state"] == "succeeded", result
    assert result["note"] == (
        "'alpha' is active but degraded: orch-1 is degraded (orch-1: health endpoint answered 503 "
        "(injected failure)); emb-1 answers"
    )
    assert result["degraded"] == [
        {"model": "orch-1", "error": "orch-1: health endpoint answered 503 (injected failure)"}
    ]
    finished = result["events"][-1]
    assert finished["type"] == "finished" and finished["note"] == result["note"]
    assert manager.unavailable("orch-1") is not None


async def test_a_healthy_commit_has_no_note_and_probes_each_swarm_member_once(world: World) -> None:
    manager = await on_gamma(world)
    world.health.checks.clear()
    result = await switch(manager, "alpha")
    assert result["state"] == "succeeded" and result["note"] is None and result["degraded"] == []
    assert world.health.checks == {"orch-1": 1, "emb-1": 1}


def test_the_words_for_every_mix_of_answering_and_degraded() -> None:
    assert rollback_words("g", {"a": None}) == "'g' is running as before (a answers)"
    assert rollback_words("g", {}) == "'g' is running as before"
    assert rollback_words("g", {"a": NODE3_DOWN}) == (
        f"'g' is back but degraded: a is degraded ({NODE3_DOWN}); no member of it answers"
    )
    assert commit_words("g", {"a": None, "b": None}) == ""
    assert commit_words("g", {"b": "x", "a": None, "c": "y"}) == (
        "'g' is active but degraded: b is degraded (x), c is degraded (y); a answers"
    )
