"""A daemon killed during a switch, restarted on the same state file and the same engines,
reaches either the full target or the full previous stack, and says which."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stackd.state.store import StateStore
from tests.unit.test_manager_switch import switch
from tests.unit.test_manager_world import World, close_all, make_world


class SimulatedKill(BaseException):
    """Stands for SIGKILL: not an ``Exception``, so nothing undoes or journals anything."""


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path)
    yield w
    await close_all(w)


def kill_after_actions(world: World, k: int) -> None:
    """The daemon dies right after the engines performed their k-th action (1-based)."""
    count = [0]

    def after(verb: str, name: str) -> None:
        count[0] += 1
        if count[0] == k:
            world.containers.after_action = world.ollama.after_action = world.processes.after_action = None
            raise SimulatedKill(f"killed after {verb} {name}")

    world.containers.after_action = world.ollama.after_action = world.processes.after_action = after


async def crashed_switch(world: World, previous: str, target: str, k: int) -> str:
    """Run ``previous``, then a switch to ``target`` killed after k engine actions. Returns its id."""
    manager = world.manager()
    assert (await switch(manager, previous))["state"] == "succeeded"
    kill_after_actions(world, k)
    handle = await manager.submit_switch(target)
    await handle.wait()
    error = manager.get_switch(handle.id).error
    assert error is not None and error.startswith("interrupted")
    await manager.aclose()  # the worker died with the "process"
    return handle.id


def count_actions(world: World, previous: str, target: str) -> int:
    return len(world.containers.actions) + len(world.ollama.actions) + len(world.processes.actions)


# The seed stacks (containers, Ollama) and the embedded ones (engine processes), across both kinds.
PAIRS = [
    ("cloud-offload", "ollama-only"),
    ("ollama-only", "cloud-offload"),
    ("cloud-offload", "elastic-hybrid"),
    ("ollama-hybrid", "ollama-only"),
    ("embedded", "embedded-long"),
    ("cloud-offload", "embedded"),
    ("embedded-long", "ollama-only"),
]


async def total_actions(tmp_path: Path, previous: str, target: str) -> int:
    """How many engine actions the switch takes when nothing goes wrong."""
    world = make_world(tmp_path / f"count-{previous}-{target}")
    manager = world.manager()
    await switch(manager, previous)
    world.containers.actions.clear()
    world.ollama.actions.clear()
    world.processes.actions.clear()
    await switch(manager, target)
    n = len(world.containers.actions) + len(world.ollama.actions) + len(world.processes.actions)
    await close_all(world)
    return n


@pytest.mark.parametrize(("previous", "target"), PAIRS)
async def test_a_kill_at_any_engine_action_recovers_to_one_whole_stack(
    tmp_path: Path, previous: str, target: str
) -> None:
    n = await total_actions(tmp_path, previous, target)
    assert n >= 2
    outcomes = set()
    for k in range(1, n + 1):
        world = make_world(tmp_path / f"kill-{k}")
        try:
            switch_id = await crashed_switch(world, previous, target, k)
            assert StateStore(world.db).open_switch() is not None
            restarted = world.manager()
            report = await restarted.recover()
            assert report.action in ("finished", "rolled_back"), report.message
            assert report.switch_id == switch_id and switch_id in report.message
            expected = target if report.action == "finished" else previous
            assert report.stack == expected
            assert world.running_stack(expected), f"kill after action {k}: {world.describe()}"
            assert dict(restarted.live_roles.current.bindings) == world.config.stacks[expected].roles
            assert restarted.active_stack == expected
            store = StateStore(world.db)
            assert store.open_switch() is None and store.active_stack() == expected
            assert store.get_switch(switch_id).state == "recovered"  # type: ignore[union-attr]
            assert (await restarted.status())["recovery"] == report.message
            outcomes.add(report.action)
        finally:
            await close_all(world)
    # The first action leaves a target of several members incomplete; the last leaves it whole. A
    # target of one engine is whole after its first action (the start), so it is always finished.
    single = (
        len(
            [
                m
                for m in world.config.stacks[target].member_names
                if world.config.models[m].runtime.value != "remote"
            ]
        )
        == 1
    )
    assert outcomes == ({"finished"} if single else {"finished", "rolled_back"})


async def test_a_kill_between_the_journal_intent_and_the_first_step_rolls_back(world: World) -> None:
    manager = world.manager()
    await switch(manager, "cloud-offload")
    store = StateStore(world.db)
    store.begin_switch("deadbeef0001", "cloud-offload", "ollama-only", {"stack": "ollama-only"})
    restarted = world.manager()
    report = await restarted.recover()
    assert report.action == "rolled_back" and report.stack == "cloud-offload"
    assert "'ollama-only' was incomplete" in report.message
    assert world.running_stack("cloud-offload")


class CommitKilledStore(StateStore):
    def commit_switch(self, switch_id: str, result_json: Any) -> None:
        raise SimulatedKill("killed before the commit")


async def test_a_kill_after_the_last_step_before_the_commit_finishes_the_switch(world: World) -> None:
    first = world.manager()
    await switch(first, "ollama-only")
    first.store = CommitKilledStore(world.db)
    handle = await first.submit_switch("cloud-offload")
    await handle.wait()
    await first.aclose()
    assert world.running_stack("cloud-offload")
    restarted = world.manager()
    assert restarted.active_stack == "ollama-only"  # never committed
    report = await restarted.recover()
    assert report.action == "finished" and report.stack == "cloud-offload"
    assert restarted.active_stack == "cloud-offload"
    assert dict(restarted.live_roles.current.bindings) == world.config.stacks["cloud-offload"].roles


async def test_a_recovery_that_cannot_reach_docker_reports_the_drift(world: World) -> None:
    await crashed_switch(world, "ollama-only", "cloud-offload", 1)
    world.containers.down = True
    restarted = world.manager()
    report = await restarted.recover()
    assert report.action == "unresolved"
    assert "DOCKER_HOST" in report.message and report.drift
    status = await restarted.status()
    assert status["recovery"] == report.message
    assert any("docker" in d for d in status["drift"])
    assert StateStore(world.db).open_switch() is None  # closed as recovered, drift reported instead


async def test_the_first_start_applies_the_default_stack(world: World) -> None:
    manager = world.manager()
    report = await manager.recover()
    assert report.action == "first_start" and report.stack == world.config.default_stack
    assert world.running_stack(world.config.default_stack)
    assert StateStore(world.db).active_stack() == world.config.default_stack


async def test_a_restart_restores_the_role_table_and_repairs_a_dead_member(world: World) -> None:
    first = world.manager()
    await switch(first, "elastic-hybrid")
    await first.aclose()
    world.containers.running_containers.discard("aether-orchestrator")
    restarted = world.manager()
    assert restarted.live_roles.current.bindings == {}
    report = await restarted.recover()
    assert report.action == "restored" and report.stack == "elastic-hybrid"
    assert world.running_stack("elastic-hybrid")
    assert dict(restarted.live_roles.current.bindings) == world.config.stacks["elastic-hybrid"].roles


async def test_without_repair_a_restart_binds_what_runs_and_reports_the_rest(world: World) -> None:
    first = world.manager()
    await switch(first, "elastic-hybrid")
    world.ollama.loaded_tags.pop("nemotron-elastic:12b")
    restarted = world.manager(repair_on_start=False)
    report = await restarted.recover()
    assert report.action == "restored" and "elastic-12b" in report.message
    bindings = restarted.live_roles.current.bindings
    assert bindings["orchestrator"] == "orchestrator-8b" and "reasoning" not in bindings
    assert "nemotron-elastic:12b" not in world.ollama.loaded_tags  # nothing was changed
    await asyncio.sleep(0)
