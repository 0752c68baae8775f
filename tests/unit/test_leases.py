"""GPU leases: the pure decision, the coordinator over the in-memory drivers, the idle job, the API.

The world is the bundled config on the scripted RTX 5090 (``tests/unit/test_manager_world.py``);
vision-qwen25vl (8 GiB) and comfyui-flux (12 GiB) are the on-demand swap group gpu-creative.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stackd.api.app import create_app
from stackd.errors import Conflict, DriverFailed, DriverUnavailable, NotFound
from stackd.gpu.leases import (
    Lease,
    LeaseCoordinator,
    LeaseRefused,
    LeaseUnavailable,
    decide_lease,
    leasable,
    swap_group,
)
from stackd.manager import ModelStackManager
from stackd.manager.periodic import PeriodicJobs
from stackd.planner import plan_switch
from stackd.planner.plan import ObservedState, StartContainer, StopContainer
from stackd.settings import Settings
from tests.unit.test_manager_world import (
    World,
    bundled_config,
    close_all,
    make_world,
    rtx5090_32g_workstation,
)

VISION, FLUX = "vision-qwen25vl", "comfyui-flux"
VISION_C, FLUX_C = "aether-vision", "aether-comfyui"
CONFIG = bundled_config()
TOKEN = "lease-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def running(*containers: str) -> ObservedState:
    names = {m.docker.container: n for n, m in CONFIG.models.items() if m.docker is not None}
    return ObservedState(
        active_stack="cloud-offload", running_containers=frozenset(names[c] for c in containers)
    )


# ---------------------------------------------------------------- the pure decision


def test_a_stopped_group_starts_the_model_and_evicts_nothing() -> None:
    decision = decide_lease(CONFIG, "cloud-offload", running("aether-orchestrator"), [], VISION)
    assert decision.refusal is None
    assert decision.steps == (StartContainer(VISION, VISION_C),)


def test_an_unleased_member_of_the_group_is_evicted_before_the_start() -> None:
    decision = decide_lease(CONFIG, "cloud-offload", running(VISION_C), [], FLUX)
    assert decision.steps == (StopContainer(VISION, VISION_C), StartContainer(FLUX, FLUX_C))
    assert decision.evicted == (VISION,)


def test_a_member_under_a_live_lease_is_never_evicted_and_the_refusal_names_the_lease() -> None:
    lease = Lease("lease-vis", VISION, acquired_at=0.0, expires_at=1_700_000_600.0, ttl_s=600.0)
    decision = decide_lease(CONFIG, "cloud-offload", running(VISION_C), [lease], FLUX)
    assert decision.steps == () and decision.refusal is not None
    assert decision.refusal.code == "held" and decision.refusal.holders == (lease,)
    assert "lease-vis" in decision.refusal.message and VISION in decision.refusal.message
    assert "2023-11-14T22:23:20Z" in decision.refusal.message  # when the group frees


def test_another_lease_on_the_same_model_shares_the_resident_container() -> None:
    lease = Lease("lease-vis", VISION, acquired_at=0.0, expires_at=10.0, ttl_s=10.0)
    decision = decide_lease(CONFIG, "cloud-offload", running(VISION_C), [lease], VISION)
    assert decision.refusal is None and decision.steps == (StartContainer(VISION, VISION_C),)


@pytest.mark.parametrize(
    ("stack", "model", "code", "says"),
    [
        ("cloud-offload", "no-such-model", "unknown_model", "unknown model 'no-such-model'"),
        ("cloud-offload", "orchestrator-8b", "not_on_demand", "orchestrator-8b is always_on"),
        ("elastic-hybrid", "elastic-9b", "not_gpu", "elastic-9b is not a GPU container"),
        ("ollama-hybrid", VISION, "not_member", "not a member of the active stack 'ollama-hybrid'"),
        (None, VISION, "no_active_stack", "no stack is active"),
    ],
)
def test_what_cannot_be_leased_is_refused_with_the_reason(
    stack: str | None, model: str, code: str, says: str
) -> None:
    decision = decide_lease(CONFIG, stack, ObservedState(), [], model)
    assert decision.steps == () and decision.refusal is not None
    assert decision.refusal.code == code and says in decision.refusal.message


def test_one_resident_member_per_swap_group_always_fits_the_card() -> None:
    """The invariant the leases rely on: for every stack the planner accepts on the RTX 5090, the
    always-on members, the reserve and any one resident member of each swap group fit the card."""
    hardware = rtx5090_32g_workstation()
    checked_groups = 0
    for stack in CONFIG.stacks:
        plan = plan_switch(CONFIG, ObservedState(), stack, hardware)
        assert plan.feasible and plan.vram is not None, plan.refusals
        members = CONFIG.stacks[stack].member_names
        groups: dict[str, list[str]] = {}
        for name in members:
            if leasable(CONFIG.models[name]):
                groups.setdefault(swap_group(name, CONFIG.models[name]), []).append(name)
        assert plan.vram.swap_budget_mib == sum(
            max(CONFIG.models[n].memory_mib for n in g) for g in groups.values()
        )
        for residents in itertools.product(*[[None, *g] for g in groups.values()]):
            resident_mib = sum(CONFIG.models[n].memory_mib for n in residents if n is not None)
            assert plan.vram.reserve_mib + plan.vram.always_on_mib + resident_mib <= plan.vram.total_mib
        checked_groups += len(groups)
    assert checked_groups == 2  # gpu-creative in cloud-offload and in elastic-hybrid


# ---------------------------------------------------------------- the coordinator


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path)
    yield w
    await close_all(w)


async def manager_on(world: World, stack: str = "cloud-offload") -> ModelStackManager:
    manager = world.manager()
    handle = await manager.submit_switch(stack)
    assert await handle.wait() == "succeeded"
    return manager


def coordinator(world: World, manager: ModelStackManager) -> LeaseCoordinator:
    ids = (f"lease-{i}" for i in itertools.count(1))
    return LeaseCoordinator(manager, clock=lambda: world.now[0], new_id=lambda: next(ids))


async def test_acquire_starts_the_container_and_leases_it_for_its_idle_ttl(world: World) -> None:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    world.containers.actions.clear()
    lease = await leases.acquire(VISION)
    assert world.containers.actions == [("start", VISION)]
    assert (lease.id, lease.model, lease.expires_at) == ("lease-1", VISION, 1000.0 + 600)
    assert manager.last_used(VISION) == 1000.0 and leases.holds(VISION)
    assert [le.id for le in leases.live()] == ["lease-1"]
    short = await leases.acquire(VISION, ttl_s=30)
    assert short.expires_at == 1030.0 and world.containers.actions == [("start", VISION)]


async def test_acquiring_flux_stops_an_unleased_vision_first(world: World) -> None:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    world.containers.running_containers.add(VISION_C)  # resident, its lease released or never taken
    world.containers.actions.clear()
    await leases.acquire(FLUX)
    assert world.containers.actions == [("stop", VISION), ("start", FLUX)]
    assert (
        FLUX_C in world.containers.running_containers and VISION_C not in world.containers.running_containers
    )


async def test_a_lease_whose_start_fails_puts_the_evicted_member_back(world: World) -> None:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    world.containers.running_containers.add(VISION_C)
    world.containers.unhealthy.add(FLUX)  # starts, never becomes healthy
    with pytest.raises(DriverFailed, match="did not become healthy"):
        await leases.acquire(FLUX)
    assert (
        VISION_C in world.containers.running_containers and FLUX_C not in world.containers.running_containers
    )
    assert leases.live() == []


async def test_a_live_lease_blocks_its_group_until_it_expires(world: World) -> None:
    """Without a wait (wait_s 0, the default) a held group answers at once: 503 (was 409 before
    the wait queue), naming the lease, when it ends, and when to retry."""
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    held = await leases.acquire(VISION, ttl_s=100)
    world.containers.actions.clear()
    with pytest.raises(LeaseUnavailable, match=f"lease {held.id}") as refused:
        await leases.acquire(FLUX)
    assert refused.value.status == 503 and refused.value.detail["retry_after_s"] == 100.0
    assert refused.value.detail["holders"] == [{"lease_id": held.id, "model": VISION, "expires_at": 1100.0}]
    assert world.containers.actions == [] and VISION_C in world.containers.running_containers
    world.now[0] = 1100.0  # expired
    assert not leases.holds(VISION)
    await leases.acquire(FLUX)
    assert world.containers.actions == [("stop", VISION), ("start", FLUX)]


async def test_renew_extends_and_release_ends_a_lease_but_keeps_the_model_running(world: World) -> None:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    lease = await leases.acquire(VISION, ttl_s=100)
    world.now[0] = 1050.0
    assert (await leases.renew(lease.id)).expires_at == 1150.0
    assert (await leases.renew(lease.id, ttl_s=10)).expires_at == 1060.0
    world.now[0] = 1055.0
    assert (await leases.release(lease.id)).model == VISION
    assert leases.live() == [] and VISION_C in world.containers.running_containers
    assert manager.last_used(VISION) == 1055.0  # the idle TTL counts from the release
    for gone in (lease.id, "no-such-lease"):
        with pytest.raises(NotFound, match="no live lease"):
            await leases.release(gone)
    expiring = await leases.acquire(VISION, ttl_s=5)
    world.now[0] = 1060.0
    with pytest.raises(NotFound):
        await leases.renew(expiring.id)


async def test_refusals_change_nothing(world: World) -> None:
    manager = await manager_on(world, "ollama-hybrid")
    leases = coordinator(world, manager)
    world.containers.actions.clear()
    with pytest.raises(LeaseRefused, match="not a member of the active stack 'ollama-hybrid'") as refused:
        await leases.acquire(VISION)
    assert refused.value.status == 409 and refused.value.detail == {"code": "not_member"}
    with pytest.raises(LeaseRefused, match="always_on"):
        await leases.acquire("orchestrator-8b")
    with pytest.raises(NotFound, match="unknown model"):
        await leases.acquire("no-such-model")
    assert world.containers.actions == [] and leases.live() == []


async def test_no_lease_while_a_switch_is_in_progress(world: World) -> None:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    handle = await manager.submit_switch("elastic-hybrid")
    with pytest.raises(Conflict, match=f"switch {handle.id} to 'elastic-hybrid' is in progress"):
        await leases.acquire(VISION)
    assert await handle.wait() == "succeeded"
    await leases.acquire(VISION)
    assert VISION_C in world.containers.running_containers


async def test_a_switch_that_drops_the_model_stops_it_and_ends_its_lease(world: World) -> None:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    await leases.acquire(VISION)
    handle = await manager.submit_switch("ollama-hybrid")
    assert await handle.wait() == "succeeded"
    assert VISION_C not in world.containers.running_containers
    assert leases.live() == [] and not leases.holds(VISION)


async def test_an_unreachable_docker_engine_refuses_the_lease(world: World) -> None:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    world.containers.down = True
    with pytest.raises(DriverUnavailable, match="DOCKER_HOST"):
        await leases.acquire(VISION)
    assert leases.live() == []


async def test_the_idle_job_never_stops_a_leased_model(world: World) -> None:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    jobs = PeriodicJobs(manager, leased=leases.holds)
    lease = await leases.acquire(VISION, ttl_s=3600)
    assert await jobs.release_idle() == (True, "nothing idle")  # first seen at 1000
    world.now[0] = 1000.0 + 601  # past the 600 s idle TTL, inside the lease
    assert await jobs.release_idle() == (True, "nothing idle")
    assert VISION_C in world.containers.running_containers
    await leases.release(lease.id)  # at 1601: idle from here
    world.now[0] = 1601.0 + 599
    assert await jobs.release_idle() == (True, "nothing idle")
    world.now[0] = 1601.0 + 600
    ok, summary = await jobs.release_idle()
    assert ok and summary.startswith(f"released {VISION}")
    assert VISION_C not in world.containers.running_containers


async def test_a_release_asks_keep_on_the_worker_right_before_stopping(world: World) -> None:
    manager = await manager_on(world)
    world.containers.running_containers.add(VISION_C)
    assert await manager.release(VISION, keep=lambda model: model == VISION) is False
    assert VISION_C in world.containers.running_containers
    assert await manager.release(VISION, keep=lambda model: False) is True
    assert VISION_C not in world.containers.running_containers


# ---------------------------------------------------------------- the API


@dataclass
class Daemon:
    world: World
    leases: LeaseCoordinator
    client: httpx.AsyncClient


@pytest.fixture
async def daemon(world: World, tmp_path: Path) -> AsyncIterator[Daemon]:
    manager = await manager_on(world)
    leases = coordinator(world, manager)
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, leases=leases)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)), base_url="http://stackd"
    )
    yield Daemon(world, leases, client)
    await client.aclose()


async def test_post_leases_needs_the_token_and_answers_the_lease(daemon: Daemon) -> None:
    c = daemon.client
    assert (await c.post("/leases", json={"model": VISION})).status_code == 401
    answer = await c.post("/leases", json={"model": VISION, "ttl_s": 120}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "lease-1" and body["model"] == VISION
    assert (body["expires_at"], body["expires_in_s"], body["ttl_s"]) == (1120.0, 120.0, 120.0)
    assert body["endpoint"] == "http://127.0.0.1:8130/v1"
    assert VISION_C in daemon.world.containers.running_containers
    assert [le["id"] for le in (await c.get("/leases")).json()["leases"]] == ["lease-1"]
    status = (await c.get("/status")).json()
    assert [(le["id"], le["model"]) for le in status["leases"]] == [("lease-1", VISION)]


async def test_api_errors_404_503_422(daemon: Daemon) -> None:
    c = daemon.client
    unknown = await c.post("/leases", json={"model": "no-such-model"}, headers=AUTH)
    assert unknown.status_code == 404 and "unknown model 'no-such-model'" in unknown.json()["message"]
    held = (await c.post("/leases", json={"model": VISION}, headers=AUTH)).json()
    conflict = await c.post("/leases", json={"model": FLUX}, headers=AUTH)
    assert conflict.status_code == 503 and conflict.headers["Retry-After"] == "600"
    assert conflict.json()["holders"] == [{"lease_id": held["id"], "model": VISION, "expires_at": 1600.0}]
    assert f"lease {held['id']}" in conflict.json()["message"]
    refused = await c.post("/leases", json={"model": "orchestrator-8b"}, headers=AUTH)
    assert refused.status_code == 409 and refused.json()["code"] == "not_on_demand"
    for bad in ({}, {"model": VISION, "ttl_s": 0}, {"model": VISION, "extra": 1}, {"model": ""}):
        answer = await c.post("/leases", json=bad, headers=AUTH)
        assert answer.status_code == 422 and answer.json()["error"] == "InvalidRequest", bad
    assert FLUX_C not in daemon.world.containers.running_containers


async def test_delete_and_renew_a_lease(daemon: Daemon) -> None:
    c = daemon.client
    lease = (await c.post("/leases", json={"model": VISION, "ttl_s": 60}, headers=AUTH)).json()
    assert (await c.delete(f"/leases/{lease['id']}")).status_code == 401
    daemon.world.now[0] = 1030.0
    renewed = await c.post(f"/leases/{lease['id']}/renew", json={"ttl_s": 90}, headers=AUTH)
    assert renewed.status_code == 200 and renewed.json()["expires_at"] == 1120.0
    again = await c.post(f"/leases/{lease['id']}/renew", headers=AUTH)
    assert again.status_code == 200 and again.json()["expires_at"] == 1120.0  # its own 90 s from 1030
    released = await c.delete(f"/leases/{lease['id']}", headers=AUTH)
    assert released.status_code == 200 and released.json()["released"] is True
    assert (await c.get("/leases")).json() == {"leases": [], "queue": []}
    assert (await c.delete(f"/leases/{lease['id']}", headers=AUTH)).status_code == 404
    flux = await c.post("/leases", json={"model": FLUX}, headers=AUTH)
    assert flux.status_code == 200
    assert VISION_C not in daemon.world.containers.running_containers


@pytest.mark.parametrize(
    ("model", "status", "error"), [("nope", 404, "NotFound"), ("orchestrator-8b", 409, "LeaseRefused")]
)
async def test_what_the_config_refuses_is_refused_before_docker_is_asked(
    daemon: Daemon, model: str, status: int, error: str
) -> None:
    daemon.world.containers.down = True  # Docker unreachable: a 503, were it asked
    answer = await daemon.client.post("/leases", json={"model": model}, headers=AUTH)
    assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
    assert (await daemon.client.post("/leases", json={"model": VISION}, headers=AUTH)).status_code == 503
