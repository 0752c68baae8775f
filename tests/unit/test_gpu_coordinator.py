"""The GPU memory coordinator on the seed's RTX 5090: the wait queue, size-aware eviction, the
wait for NVML after a stop, measured footprints and leases that survive a restart.

The world is the bundled config on the scripted RTX 5090 (``tests/unit/test_manager_world.py``):
32607 MiB, 3 GiB reserve, the always-on orchestrator (13 GiB) and embeddings (1 GiB), and the
on-demand vision-qwen25vl (8 GiB) and comfyui-flux (12 GiB) of the swap group gpu-creative.
NVML is scripted (no GPU here): ``world.hardware`` is what every read returns.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from stackd.api.app import create_app
from stackd.config.models import Runtime, StacksConfig
from stackd.drivers.docker_pids import host_pids
from stackd.gpu.grant import FootprintMeter
from stackd.gpu.leases import LeaseCoordinator, LeaseUnavailable
from stackd.hardware.types import GpuDevice, GpuProcess, HardwareSnapshot
from stackd.manager import ModelStackManager
from stackd.planner import plan_switch
from stackd.planner.footprints import footprint_digest, remembered_footprints
from stackd.planner.plan import ObservedState
from stackd.router import ReasonRouter
from stackd.settings import Settings
from stackd.state.gpu import GpuJournal
from tests.unit.test_manager_world import World, close_all, make_world

VISION, FLUX = "vision-qwen25vl", "comfyui-flux"
VISION_C, FLUX_C = "aether-vision", "aether-comfyui"
TOKEN = "coordinator-test-token-0123456789"


class FakeTime:
    """The world's clock, moved only by ``advance``; ``sleep`` returns once the clock has moved
    far enough (the coordinator's pump and its NVML wait sleep through it)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._moved = asyncio.Event()
        self.on_sleep: list[float] = []  # every sleep asked for, in order

    def __call__(self) -> float:
        return self.world.now[0]

    def advance(self, seconds: float) -> None:
        self.world.now[0] += seconds
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.on_sleep.append(seconds)
        until = self.world.now[0] + seconds
        while self.world.now[0] < until:
            await self._moved.wait()


async def settle() -> None:
    """Let the pump, the worker and their thread hops (NVML and store reads) run their course."""
    for _ in range(15):
        await asyncio.sleep(0.004)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path)
    yield w
    await close_all(w)


@dataclass
class Rig:
    world: World
    manager: ModelStackManager
    leases: LeaseCoordinator
    journal: GpuJournal
    time: FakeTime
    pids: dict[str, tuple[int, ...]]


async def rig(
    world: World, tmp_path: Path, config: StacksConfig | None = None, measure_switches: bool = False
) -> Rig:
    """``measure_switches``: the manager tells the meter what a switch started, as the daemon wires it."""
    journal = GpuJournal(tmp_path / "state" / "stackd.db")
    if config is not None:
        world.config = config
    pids: dict[str, tuple[int, ...]] = {}

    async def container_pids(name: str, model: object) -> tuple[int, ...]:
        return pids.get(name, ())

    meter = FootprintMeter(journal, world.processes, lambda: world.hardware, container_pids)
    manager = world.manager(
        footprints=lambda c: remembered_footprints(c, journal.footprints()),
        **({"on_started": meter.measure_later} if measure_switches else {}),
    )
    handle = await manager.submit_switch("cloud-offload")
    assert await handle.wait() == "succeeded"
    time = FakeTime(world)
    ids = (f"lease-{i}" for i in itertools.count(1))
    leases = LeaseCoordinator(
        manager,
        clock=time,
        new_id=lambda: next(ids),
        journal=journal,
        meter=meter,
        sleep=time.sleep,
        poll_s=3600.0,  # nothing but a release or the clock wakes a waiter here
        release_wait_s=5.0,
    )
    return Rig(world, manager, leases, journal, time, pids)


# ---------------------------------------------------------------- the seed's scenario


async def test_with_flux_leased_a_vision_lease_waits_and_is_served_when_flux_is_released(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    flux = await r.leases.acquire(FLUX, ttl_s=300)
    vision = asyncio.create_task(r.leases.acquire(VISION, ttl_s=60, wait_s=250))
    r.time.advance(88)
    await settle()
    assert not vision.done() and FLUX_C in world.containers.running_containers
    [waiter] = r.leases.queue()
    assert waiter["model"] == VISION and waiter["position"] == 0
    assert waiter["reason"] == f"waiting for lease {flux.id} on {FLUX}, expires in 212 s"
    world.containers.actions.clear()
    await r.leases.release(flux.id)
    lease = await asyncio.wait_for(vision, 5)
    assert lease.model == VISION and world.containers.actions == [("stop", FLUX), ("start", VISION)]
    assert r.leases.queue() == []


async def test_with_flux_leased_a_vision_lease_is_served_when_the_lease_expires(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    await r.leases.acquire(FLUX, ttl_s=100)
    vision = asyncio.create_task(r.leases.acquire(VISION, wait_s=250))
    await settle()
    assert not vision.done()
    r.time.advance(100)  # the pump sleeps until the holder's expiry, no later
    lease = await asyncio.wait_for(vision, 5)
    assert lease.acquired_at == 1100.0 and VISION_C in world.containers.running_containers


async def test_with_flux_idle_vision_evicts_it_at_once(world: World, tmp_path: Path) -> None:
    r = await rig(world, tmp_path)
    flux = await r.leases.acquire(FLUX)
    await r.leases.release(flux.id)  # resident and idle
    world.containers.actions.clear()
    await asyncio.wait_for(r.leases.acquire(VISION), 5)  # no wait_s: it is served now or never
    assert world.containers.actions == [("stop", FLUX), ("start", VISION)]
    assert r.time.on_sleep == []  # NVML showed the room back at the first read


async def test_a_waiter_past_its_deadline_gets_503_with_the_reason_and_retry_after(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    flux = await r.leases.acquire(FLUX, ttl_s=100)
    vision = asyncio.create_task(r.leases.acquire(VISION, wait_s=40))
    await settle()
    r.time.advance(40)
    with pytest.raises(LeaseUnavailable, match=f"lease {flux.id}") as refused:
        await asyncio.wait_for(vision, 5)
    assert refused.value.status == 503 and refused.value.detail["retry_after_s"] == 60.0
    assert (
        FLUX_C in world.containers.running_containers and VISION_C not in world.containers.running_containers
    )


async def test_the_head_of_the_queue_is_never_overtaken(world: World, tmp_path: Path) -> None:
    """A second FLUX request could share the resident FLUX at once, but vision asked first: FLUX's
    request waits behind it, then for vision's lease."""
    r = await rig(world, tmp_path)
    flux = await r.leases.acquire(FLUX, ttl_s=300)
    vision = asyncio.create_task(r.leases.acquire(VISION, ttl_s=500, wait_s=400))
    await settle()
    second_flux = asyncio.create_task(r.leases.acquire(FLUX, wait_s=400))
    await settle()
    assert not second_flux.done()
    assert [w["model"] for w in r.leases.queue()] == [VISION, FLUX]
    assert r.leases.queue()[1]["reason"] == f"behind 1 earlier request (first: {VISION})"
    await r.leases.release(flux.id)
    held = await asyncio.wait_for(vision, 5)
    await settle()
    assert not second_flux.done()
    reason = r.leases.queue()[0]["reason"]
    assert isinstance(reason, str) and reason.startswith(f"waiting for lease {held.id} on {VISION}")
    await r.leases.release(held.id)
    assert (await asyncio.wait_for(second_flux, 5)).model == FLUX


async def test_a_caller_that_leaves_the_queue_is_skipped(world: World, tmp_path: Path) -> None:
    r = await rig(world, tmp_path)
    flux = await r.leases.acquire(FLUX, ttl_s=300)
    vision = asyncio.create_task(r.leases.acquire(VISION, wait_s=400))
    await settle()
    vision.cancel()
    await settle()
    assert r.leases.queue() == []
    await r.leases.release(flux.id)
    await settle()
    assert VISION_C not in world.containers.running_containers and r.leases.live() == []


# ---------------------------------------------------------------- size-aware eviction beyond swap groups


def ungrouped(config: StacksConfig) -> StacksConfig:
    """The bundled config with vision and FLUX in no swap group: only their sizes keep them apart."""
    models = dict(config.models)
    for name in (VISION, FLUX):
        models[name] = models[name].model_copy(update={"swap_group": None})
    return config.model_copy(update={"models": models})


def card(total_mib: int, used_mib: int, processes: tuple[GpuProcess, ...] = ()) -> HardwareSnapshot:
    gpu = GpuDevice(0, "NVIDIA GeForce RTX 5090", total_mib, used_mib, total_mib - used_mib, processes)
    return HardwareSnapshot((gpu,), 131072, 120000, 32, "scenario:test")


async def test_ungrouped_members_share_the_card_while_they_fit(world: World, tmp_path: Path) -> None:
    world.hardware = card(40960, 3072)  # 40 GiB: vision and FLUX fit together
    r = await rig(world, tmp_path, ungrouped(world.config))
    await r.leases.acquire(VISION)
    await r.leases.acquire(FLUX)
    assert {VISION_C, FLUX_C} <= world.containers.running_containers
    assert ("stop", VISION) not in world.containers.actions


def scripted_nvml(world: World, total_mib: int, foreign_mib: int) -> None:
    """NVML as the card would read: foreign processes plus stackd's running members at their
    declared size, read again after every start and stop."""

    def read() -> None:
        mine = sum(
            m.memory_mib
            for m in world.config.models.values()
            if m.docker is not None and m.docker.container in world.containers.running_containers
        )
        world.hardware = card(total_mib, foreign_mib + mine)

    world.containers.after_action = lambda verb, name: read()
    read()


async def test_an_ungrouped_member_that_does_not_fit_evicts_an_idle_one_never_a_leased_one(
    world: World, tmp_path: Path
) -> None:
    scripted_nvml(world, 40960, 3072)  # 40 GiB: 23 GiB left for vision (8) and FLUX (12)
    r = await rig(world, tmp_path, ungrouped(world.config))
    vision = await r.leases.acquire(VISION)
    await r.leases.release(vision.id)
    await r.manager.release(VISION)  # its idle TTL ran out
    flux = await r.leases.acquire(FLUX)
    scripted_nvml(world, 40960, 3072 + 6144)  # a foreign process takes 6 GiB: 5 GiB left beside FLUX
    world.containers.actions.clear()
    with pytest.raises(LeaseUnavailable, match=f"waiting for lease {flux.id} on {FLUX}, expires in 600 s"):
        await asyncio.wait_for(r.leases.acquire(VISION, wait_s=0), 5)
    assert world.containers.actions == []  # FLUX is leased: never evicted
    await r.leases.release(flux.id)
    await r.leases.acquire(VISION)  # FLUX is idle now: it goes, and only it
    assert world.containers.actions == [("stop", FLUX), ("start", VISION)]


async def test_a_model_the_card_can_never_hold_is_refused_at_once(world: World, tmp_path: Path) -> None:
    r = await rig(world, tmp_path)
    world.hardware = replace(world.hardware, gpus=(replace(world.hardware.gpus[0], total_mib=24576),))
    with pytest.raises(Exception, match="can never hold it") as refused:
        await r.leases.acquire(FLUX, wait_s=300)
    assert getattr(refused.value, "status", None) == 409


# ---------------------------------------------------------------- NVML after a stop


def nvml_holding(free_mib: int) -> HardwareSnapshot:
    processes = (GpuProcess(777, "vision-engine", 8192), GpuProcess(1840, "dwm.exe", 1792))
    return card(32607, 32607 - free_mib, processes)


async def test_a_start_waits_until_nvml_shows_the_stopped_members_memory_back(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    world.containers.running_containers.add(VISION_C)  # idle, holding 8 GiB
    world.hardware = nvml_holding(free_mib=10000)  # below FLUX's 12 GiB until the driver frees it
    flux = asyncio.create_task(r.leases.acquire(FLUX))
    await settle()
    assert world.containers.actions[-1] == ("stop", VISION) and not flux.done()
    r.time.advance(0.5)
    await settle()
    world.hardware = nvml_holding(free_mib=18192)
    r.time.advance(0.5)
    await asyncio.wait_for(flux, 5)
    assert world.containers.actions[-2:] == [("stop", VISION), ("start", FLUX)]
    assert r.time.on_sleep[:2] == [0.5, 0.5]


async def test_memory_that_never_comes_back_refuses_naming_what_holds_it_and_puts_back_the_evicted(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    world.containers.running_containers.add(VISION_C)
    world.hardware = nvml_holding(free_mib=10000)
    flux = asyncio.create_task(r.leases.acquire(FLUX))
    for _ in range(12):
        await settle()
        r.time.advance(0.5)
    with pytest.raises(LeaseUnavailable, match=r"still holding memory: vision-engine \(pid 777\) 8 GiB"):
        await asyncio.wait_for(flux, 5)
    assert (
        VISION_C in world.containers.running_containers and FLUX_C not in world.containers.running_containers
    )
    assert world.containers.actions[-2:] == [("stop", VISION), ("start", VISION)]  # the executor's undo


# ---------------------------------------------------------------- measured footprints


async def test_flux_measured_at_14_gib_against_12_declared_changes_the_next_plan(
    world: World, tmp_path: Path
) -> None:
    world.hardware = card(32607, 3072, (GpuProcess(4242, "python3", 14336),))
    r = await rig(world, tmp_path)
    before = await r.manager.plan("cloud-offload")
    r.pids[FLUX] = (4242,)  # docker top of aether-comfyui
    await r.leases.acquire(FLUX)
    digest = footprint_digest(world.config.models[FLUX])
    assert r.journal.footprints() == {(FLUX, digest): 14336}
    after = await r.manager.plan("cloud-offload")
    assert before.vram is not None and after.vram is not None
    assert (before.vram.swap_budget_mib, after.vram.swap_budget_mib) == (12288, 14336)
    item = next(i for i in after.vram.items if i.model == FLUX)
    assert (item.mib, item.measured_mib, item.budget_mib, item.over_declared) == (12288, 14336, 14336, True)
    # on a 30 GiB card the declared 12 GiB fit and the measured 14 GiB do not
    fixed = card(30720, 0)
    observed = ObservedState(footprint_mib={FLUX: 14336})
    assert plan_switch(world.config, ObservedState(), "cloud-offload", fixed).feasible
    refused = plan_switch(world.config, observed, "cloud-offload", fixed)
    assert (
        not refused.feasible
        and "gpu-creative swap group 14 GiB (comfyui-flux)" in refused.refusals[0].message
    )
    # status flags it from the remembered figure once FLUX is stopped
    await r.manager.release(FLUX)
    status = await r.manager.status()
    member = next(m for m in status["members"] if m["name"] == FLUX)
    assert (member["memory_mib"], member["measured_mib"]) == (12288, 14336)


async def test_a_footprint_belongs_to_its_engine_config(tmp_path: Path) -> None:
    journal = GpuJournal(tmp_path / "db.sqlite")
    config = make_world(tmp_path).config
    journal.record_footprint(FLUX, footprint_digest(config.models[FLUX]), 14336)
    assert journal.record_footprint(FLUX, footprint_digest(config.models[FLUX]), 13000) == 14336  # the peak
    assert remembered_footprints(config, journal.footprints()) == {FLUX: 14336}
    docker = config.models[FLUX].docker
    assert docker is not None
    other = config.models[FLUX].model_copy(
        update={"docker": docker.model_copy(update={"container": "other"})}
    )
    assert footprint_digest(other) != footprint_digest(config.models[FLUX])
    journal.close()
    assert GpuJournal(tmp_path / "db.sqlite").footprints() == {
        (FLUX, footprint_digest(config.models[FLUX])): 14336
    }


def test_host_pids_reads_the_pid_column_of_docker_top() -> None:
    top = {
        "Titles": ["UID", "PID", "PPID", "CMD"],
        "Processes": [["0", "4242", "1", "python"], ["0", "4250", "4242", "x"]],
    }
    assert host_pids(top) == (4242, 4250)
    assert host_pids({"Titles": [], "Processes": []}) == ()


# ---------------------------------------------------------------- restart


async def test_leases_survive_a_daemon_restart(world: World, tmp_path: Path) -> None:
    r = await rig(world, tmp_path)
    lease = await r.leases.acquire(VISION, ttl_s=300)
    short = await r.leases.acquire(VISION, ttl_s=10)
    r.journal.close()
    world.now[0] += 20  # the daemon was down 20 s: the short lease ended meanwhile
    journal = GpuJournal(tmp_path / "state" / "stackd.db")
    restarted = LeaseCoordinator(world.manager(), clock=lambda: world.now[0], journal=journal)
    assert [le.id for le in restarted.live()] == [lease.id] and restarted.holds(VISION)
    assert [row.lease_id for row in journal.leases()] == [lease.id]  # the ended one is dropped
    assert short.id not in {row.lease_id for row in journal.leases()}
    await restarted.release(lease.id)
    assert journal.leases() == []
    journal.close()


# ---------------------------------------------------------------- the API


async def test_get_leases_shows_the_queue_and_post_answers_503_with_retry_after(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    services = world.services(r.manager, Settings(state_dir=tmp_path / "state"), TOKEN, leases=r.leases)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://stackd", headers=auth) as c:
        flux = (await c.post("/leases", json={"model": FLUX, "ttl_s": 300})).json()
        waiting = asyncio.create_task(c.post("/leases", json={"model": VISION, "wait_s": 30}))
        await settle()
        r.time.advance(10)
        await settle()
        listed = (await c.get("/leases")).json()
        assert [le["id"] for le in listed["leases"]] == [flux["id"]]
        [queued] = listed["queue"]
        assert queued["model"] == VISION and queued["deadline_in_s"] == 20.0
        assert queued["reason"] == f"waiting for lease {flux['id']} on {FLUX}, expires in 290 s"
        r.time.advance(20)
        answer = await asyncio.wait_for(waiting, 5)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "270"
        assert answer.json()["code"] == "held" and f"lease {flux['id']}" in answer.json()["message"]
        too_long = await c.post("/leases", json={"model": VISION, "wait_s": 3601})
        assert too_long.status_code == 422


async def test_a_call_refused_its_lease_is_503_with_retry_after_on_the_gateway_and_the_tools(
    world: World, tmp_path: Path
) -> None:
    """A call to vision while FLUX is leased waits its 60 s (``CallLeases``) for the room, then
    gets the lease's refusal: 503 with ``Retry-After`` (when FLUX's lease ends), in OpenAI's
    shape on the gateway and stackd's on the tools, as ``POST /leases`` answers it."""
    r = await rig(world, tmp_path)
    router = ReasonRouter(world.config, r.manager.live_roles)  # never called: the lease is refused first
    settings = Settings(state_dir=tmp_path / "state")
    services = world.services(r.manager, settings, TOKEN, leases=r.leases, router=router)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://stackd", headers=auth) as c:
        flux = (await c.post("/leases", json={"model": FLUX, "ttl_s": 300})).json()
        messages = [{"role": "user", "content": "what is in this picture?"}]
        chat = asyncio.create_task(
            c.post("/v1/chat/completions", json={"model": "vision", "messages": messages})
        )
        await settle()
        r.time.advance(60)
        gateway = await asyncio.wait_for(chat, 5)
        tool = asyncio.create_task(c.post("/tools/invoke_model", json={"preset": "vision", "prompt": "hi"}))
        await settle()
        r.time.advance(60)
        tools = await asyncio.wait_for(tool, 5)
    assert gateway.status_code == 503 and gateway.headers["Retry-After"] == "240"
    error = gateway.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "held"
    assert f"lease {flux['id']}" in error["message"]
    assert tools.status_code == 503 and tools.headers["Retry-After"] == "180"
    assert tools.json()["error"] == "LeaseUnavailable" and tools.json()["retry_after_s"] == 180.0
    assert VISION_C not in world.containers.running_containers


async def test_an_always_on_member_a_switch_starts_is_measured_too(world: World, tmp_path: Path) -> None:
    world.hardware = card(32607, 3072, (GpuProcess(5151, "vllm", 14848),))
    r = await rig(world, tmp_path, measure_switches=True)
    r.pids["orchestrator-8b"] = (5151,)
    world.containers.running_containers.discard("aether-orchestrator")  # it died: the next switch restarts it
    handle = await r.manager.submit_switch("cloud-offload")
    assert await handle.wait() == "succeeded"
    await settle()
    digest = footprint_digest(world.config.models["orchestrator-8b"])
    assert r.journal.footprints() == {("orchestrator-8b", digest): 14848}  # 14.5 GiB against 13 declared
    plan = await r.manager.plan("cloud-offload")
    assert plan.vram is not None and plan.vram.always_on_mib == 14848 + 1024


async def test_a_process_member_is_leased_and_measured_through_its_process_tree(
    world: World, tmp_path: Path
) -> None:
    """vision as a ``runtime: process`` engine on the GPU: the lease evicts the idle FLUX container,
    spawns the engine and reads NVML's memory of the engine's PIDs (``ProcessInfo.pids``)."""
    models = dict(world.config.models)
    engine = models["smollm2-135m"].process
    models[VISION] = models[VISION].model_copy(
        update={"runtime": Runtime.process, "docker": None, "process": engine}
    )
    world.hardware = card(32607, 3072, (GpuProcess(1001, "llama-server", 9216),))  # the fake's first PID
    r = await rig(world, tmp_path, world.config.model_copy(update={"models": models}))
    world.containers.running_containers.add(FLUX_C)  # resident and idle
    lease = await r.leases.acquire(VISION)
    assert world.containers.actions[-1] == ("stop", FLUX) and world.processes.actions == [("start", VISION)]
    assert r.journal.footprints() == {(VISION, footprint_digest(world.config.models[VISION])): 9216}
    await r.leases.release(lease.id)
    plan = await r.manager.plan("cloud-offload")
    assert plan.vram is not None and plan.vram.swap_budget_mib == 12288  # FLUX's 12 GiB is still the largest
    item = next(i for i in plan.vram.items if i.model == VISION)
    assert (item.mib, item.measured_mib, item.over_declared) == (8192, 9216, True)
