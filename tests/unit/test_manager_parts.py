"""The manager composed of its parts: a switch planned on the worker, status from a snapshot."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stackd.config.models import StacksConfig
from stackd.drivers.memory import MemoryProcesses
from stackd.hardware.types import HardwareSnapshot
from stackd.manager import ModelStackManager
from stackd.manager.status import build_status
from stackd.planner import plan_switch
from stackd.planner.plan import ObservedState, Plan, StartContainer
from tests.unit.test_manager_world import World, close_all, make_world

ORCH = "orchestrator-8b"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path)
    yield w
    await close_all(w)


async def blocked_worker(manager: ModelStackManager) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """A job holding the worker until the event is set; then it starts the orchestrator."""
    go, running = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        running.set()
        await go.wait()
        await manager.containers.ensure_running(ORCH, manager.config.models[ORCH])

    task = asyncio.create_task(manager.run_exclusive(job))
    await running.wait()
    return go, task


def test_the_manager_inherits_from_nothing_of_stackd() -> None:
    assert ModelStackManager.__mro__ == (ModelStackManager, object)


async def test_a_switch_is_planned_on_the_worker_after_the_jobs_queued_before_it(world: World) -> None:
    planned_while: list[bool] = []
    go: asyncio.Event | None = None

    def planner(config: StacksConfig, observed: ObservedState, target: str, hw: HardwareSnapshot) -> Plan:
        assert go is not None
        planned_while.append(go.is_set())
        return plan_switch(config, observed, target, hw)

    manager = world.manager(planner=planner)
    go, job = await blocked_worker(manager)
    submit = asyncio.create_task(manager.submit_switch("cloud-offload"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert planned_while == [] and not submit.done()  # the caller waits for the worker to plan
    assert manager.current_switch is not None  # ...holding the slot meanwhile
    go.set()
    handle = await submit
    await job
    assert planned_while == [True]
    # The plan saw what the job before it started: the orchestrator is not started again.
    starts = [s.model for s in handle.plan.steps if isinstance(s, StartContainer)]
    assert ORCH not in starts and "embeddings-nomic" in starts
    assert await handle.wait() == "succeeded"
    assert world.containers.actions.count(("start", ORCH)) == 1


async def test_a_caller_cancelled_before_its_switch_is_planned_leaves_the_slot_and_nothing_runs(
    world: World,
) -> None:
    manager = world.manager()
    go, job = await blocked_worker(manager)
    submit = asyncio.create_task(manager.submit_switch("cloud-offload"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert manager.current_switch is not None
    submit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submit
    assert manager.current_switch is None  # the slot is free at once
    go.set()
    await job
    await manager.run_exclusive(noop)  # the worker has run every job queued before this one
    assert world.containers.actions == [("start", ORCH)]  # only the job's start: no switch ran
    assert manager.active_stack is None and manager.recent_switches() == []
    handle = await manager.submit_switch("cloud-offload")  # and the next switch may go
    assert await handle.wait() == "succeeded"


async def noop() -> None:
    return None


async def test_status_is_built_from_a_snapshot_that_later_changes_do_not_touch(world: World) -> None:
    manager = world.manager()
    handle = await manager.submit_switch("cloud-offload")
    assert await handle.wait() == "succeeded"
    snapshot = manager.snapshot()
    manager.record_probe("claude-sonnet", False, "HTTP 529 overloaded")
    manager.record_job("drift", True, "no drift")
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.active = "elastic-hybrid"  # type: ignore[misc]
    observation = await manager.observe_detailed()
    before: dict[str, Any] = build_status(snapshot, observation, world.hardware, None)
    now = await manager.status()
    assert before["degraded"] == [] and before["periodic"] == {}
    assert now["degraded"] == [{"model": "claude-sonnet", "error": "HTTP 529 overloaded"}]
    assert now["periodic"]["drift"]["summary"] == "no drift"
    sonnet = {m["name"]: m for m in before["members"]}["claude-sonnet"]
    assert sonnet["state"] == "ready" and sonnet["last_probe"]["ok"] is True
    assert before["active_stack"] == now["active_stack"] == "cloud-offload"
    assert before["last_switch"]["switch_id"] == now["last_switch"]["switch_id"] == handle.id


@dataclass
class TailedProcesses(MemoryProcesses):
    """Engine processes whose log the status view asks for, and says when."""

    tails_read: list[tuple[str, int]] = field(default_factory=list)

    def log_tail(self, name: str, lines: int = 20) -> list[str]:
        self.tails_read.append((name, lines))
        return [f"{name}: line {i}" for i in range(lines)]


async def test_status_reads_a_process_members_log_only_when_its_state_calls_for_it(world: World) -> None:
    processes = world.processes = TailedProcesses()
    manager = world.manager()
    handle = await manager.submit_switch("embedded")
    assert await handle.wait() == "succeeded"
    healthy = {m["name"]: m for m in (await manager.status())["members"]}["smollm2-135m"]
    assert healthy["state"] == "running" and "log_tail" not in healthy
    assert processes.tails_read == []
    manager.record_probe("smollm2-135m", False, "HTTP 500 from /health")
    sick = {m["name"]: m for m in (await manager.status())["members"]}["smollm2-135m"]
    assert sick["state"] == "unhealthy" and sick["detail"] == "HTTP 500 from /health"
    assert sick["log_tail"] == [f"smollm2-135m: line {i}" for i in range(10)]
    assert processes.tails_read == [("smollm2-135m", 10)]
