"""Requests in flight finish on the binding they started with: a switch stops a model only once
the router's requests on it are done (or the longest a request may take has passed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from stackd.roles import InFlight
from tests.unit.test_manager_switch import started
from tests.unit.test_manager_world import close_all, make_world


async def test_in_flight_counts_and_wakes_waiters() -> None:
    in_flight = InFlight()
    assert await in_flight.wait_idle("m", 0.01) is True
    with in_flight.using("m"), in_flight.using("m"):
        assert in_flight.count("m") == 2
        assert await in_flight.wait_idle("m", 0.01) is False
    assert in_flight.count("m") == 0 and await in_flight.wait_idle("m", 0.01) is True


async def test_the_old_orchestrator_stops_only_after_its_request_finished(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    manager = await started(world, "cloud-offload")
    release = asyncio.Event()
    request_started = asyncio.Event()
    stopped_while_running: list[bool] = []

    async def request_on_old_orchestrator() -> None:
        with manager.live_roles.in_flight.using("orchestrator-8b"):
            request_started.set()
            await release.wait()
            stopped_while_running.append("aether-orchestrator" not in world.containers.running_containers)

    request = asyncio.create_task(request_on_old_orchestrator())
    await request_started.wait()
    handle = await manager.submit_switch("ollama-only")
    async with asyncio.timeout(5):  # the switch swaps the roles, then waits at the stop
        async for event in manager.events(handle.id):
            if event["type"] == "draining":
                break
    assert "aether-orchestrator" in world.containers.running_containers
    assert manager.live_roles.current.bindings["orchestrator"] == "orchestrator-cpu"  # new calls go there
    release.set()
    await handle.wait()
    result = manager.get_switch(handle.id)
    await request
    assert result.state == "succeeded"
    assert stopped_while_running == [False]
    assert "aether-orchestrator" not in world.containers.running_containers
    drained = [e for e in result.events if e["type"] == "draining"]
    assert drained and drained[0]["model"] == "orchestrator-8b" and drained[0]["in_flight"] == 1
    await close_all(world)
