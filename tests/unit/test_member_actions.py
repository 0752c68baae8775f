"""The status page's member actions (issue 24): ``POST /members/{name}/restart`` and
``/stop``, behind the token, over the in-memory world (elastic-hybrid on the RTX 5090)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stackd.api.app import create_app
from stackd.gpu.leases import LeaseCoordinator
from stackd.settings import Settings
from tests.unit.test_manager_world import World, close_all, make_world

TOKEN = "actions-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    world: World
    client: httpx.AsyncClient
    leases: LeaseCoordinator


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    world = make_world(tmp_path)
    manager = world.manager()
    await manager.recover()
    await (await manager.submit_switch("elastic-hybrid")).wait()
    leases = LeaseCoordinator(manager)
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, leases=leases)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://stackd") as client:
        yield Served(world, client, leases)
    await leases.aclose()
    await close_all(world)


async def test_restart_stops_and_starts_the_engine_and_needs_the_token(served: Served) -> None:
    containers = served.world.containers
    assert (await served.client.post("/members/orchestrator-8b/restart")).status_code == 401
    assert containers.actions[-1] != ("stop", "orchestrator-8b")
    before = len(containers.actions)
    answer = await served.client.post("/members/orchestrator-8b/restart", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"member": "orchestrator-8b", "restarted": True}
    assert containers.actions[before:] == [("stop", "orchestrator-8b"), ("start", "orchestrator-8b")]
    assert "aether-orchestrator" in containers.running_containers


async def test_a_member_without_an_engine_of_stackds_or_outside_the_stack_is_refused(served: Served) -> None:
    cloud = await served.client.post("/members/claude-sonnet/restart", headers=AUTH)
    assert cloud.status_code == 409 and "no engine of its own" in cloud.json()["message"]
    stranger = await served.client.post("/members/smollm2-135m/restart", headers=AUTH)
    assert stranger.status_code == 404 and "not a member of the active stack" in stranger.json()["message"]


async def test_stop_unloads_an_idle_on_demand_member_but_not_a_leased_or_always_on_one(
    served: Served,
) -> None:
    containers = served.world.containers
    lease = await served.leases.acquire("vision-qwen25vl")
    assert "aether-vision" in containers.running_containers
    held = await served.client.post("/members/vision-qwen25vl/stop", headers=AUTH)
    assert held.status_code == 409 and "a lease holds vision-qwen25vl" in held.json()["message"]
    assert "aether-vision" in containers.running_containers
    await served.leases.release(lease.id)
    answer = await served.client.post("/members/vision-qwen25vl/stop", headers=AUTH)
    assert answer.status_code == 200 and answer.json() == {"member": "vision-qwen25vl", "stopped": True}
    assert "aether-vision" not in containers.running_containers
    always = await served.client.post("/members/orchestrator-8b/stop", headers=AUTH)
    assert always.status_code == 409 and "always on" in always.json()["message"]
    assert "aether-orchestrator" in containers.running_containers
