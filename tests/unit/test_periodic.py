"""Periodic jobs run directly with a fake clock: health, remotes, drift, idle TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stackd.config.models import Model
from stackd.drivers.memory import MemoryHealth
from stackd.errors import DriverUnavailable
from stackd.manager import ModelStackManager
from stackd.manager.periodic import PeriodicJobs
from tests.unit.test_manager_world import World, close_all, make_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path)
    yield w
    await close_all(w)


async def running(world: World, stack: str) -> ModelStackManager:
    manager = world.manager()
    handle = await manager.submit_switch(stack)
    assert await handle.wait() == "succeeded"
    return manager


def member(status: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(m for m in status["members"] if m["name"] == name)


async def test_health_probes_mark_an_unhealthy_member_and_respect_the_interval(world: World) -> None:
    manager = await running(world, "cloud-offload")
    jobs = PeriodicJobs(manager)
    world.health.unhealthy.add("embeddings-nomic")
    ok, summary = await jobs.probe_health()
    assert not ok and "embeddings-nomic" in summary and "probed 2" in summary
    status = await manager.status()
    assert member(status, "embeddings-nomic")["state"] == "unhealthy"
    assert member(status, "orchestrator-8b")["state"] == "running"
    assert member(status, "orchestrator-8b")["last_probe"]["ok"] is True
    assert (await jobs.probe_health())[1] == "probed 0"  # not due yet
    world.now[0] += 10
    world.health.unhealthy.clear()
    assert await jobs.probe_health() == (True, "probed 2")
    assert world.health.checks == {"orchestrator-8b": 2, "embeddings-nomic": 2}
    assert member(await manager.status(), "embeddings-nomic")["state"] == "running"


async def test_a_remote_that_stops_answering_is_degraded_until_it_answers(world: World) -> None:
    manager = await running(world, "cloud-offload")
    jobs = PeriodicJobs(manager)
    world.remotes.down.add("claude-sonnet")
    ok, summary = await jobs.probe_remotes()
    assert not ok and "claude-sonnet" in summary
    assert member(await manager.status(), "claude-sonnet")["state"] == "degraded"
    world.remotes.down.clear()
    assert (await jobs.probe_remotes())[0]
    status = await manager.status()
    assert member(status, "claude-sonnet")["state"] == "ready" and status["degraded"] == []


async def test_drift_is_reported_and_optionally_repaired(world: World) -> None:
    manager = await running(world, "cloud-offload")
    assert await PeriodicJobs(manager).check_drift() == (True, "no drift")
    world.containers.running_containers.discard("aether-orchestrator")
    ok, summary = await PeriodicJobs(manager).check_drift()
    assert not ok and "orchestrator-8b: container is not running" in summary
    assert not world.running_stack("cloud-offload")
    ok, summary = await PeriodicJobs(manager, repair_drift=True).check_drift()
    assert "repairing with switch" in summary
    assert manager.current_switch is not None
    await manager.current_switch.finished.wait()
    assert world.running_stack("cloud-offload")


async def test_on_demand_members_are_released_after_their_idle_ttl(world: World) -> None:
    manager = await running(world, "elastic-hybrid")
    jobs = PeriodicJobs(manager)
    world.containers.running_containers.add("aether-vision")  # a lease started it (ttl 600 s)
    assert await jobs.release_idle() == (True, "nothing idle")  # first seen now (1000)
    world.now[0] = 1500
    runtime_9b = world.config.models["elastic-9b"].ollama
    assert runtime_9b is not None
    world.ollama.loaded_tags[runtime_9b.tag] = runtime_9b  # loaded on first use (ttl 900 s)
    manager.touch("vision-qwen25vl")
    assert await jobs.release_idle() == (True, "nothing idle")
    world.now[0] = 2050
    assert await jobs.release_idle() == (True, "nothing idle")  # both used 550 s ago
    world.now[0] = 2101
    ok, summary = await jobs.release_idle()
    assert ok and "vision-qwen25vl" in summary and "elastic-9b" not in summary
    assert "aether-vision" not in world.containers.running_containers
    assert runtime_9b.tag in world.ollama.loaded_tags
    world.now[0] = 2401
    _, summary = await jobs.release_idle()
    assert "elastic-9b" in summary and runtime_9b.tag not in world.ollama.loaded_tags
    assert world.running_stack("elastic-hybrid")  # always-on members untouched


async def test_job_results_show_in_status_and_a_failing_job_never_raises(world: World) -> None:
    manager = await running(world, "cloud-offload")
    jobs = PeriodicJobs(manager)
    await jobs.run("drift", jobs.check_drift)
    world.containers.down = True
    await jobs.run("health", jobs.probe_health)
    periodic = (await manager.status())["periodic"]
    assert periodic["drift"]["ok"] is True and periodic["drift"]["summary"] == "no drift"
    assert periodic["health"]["ok"] is True and periodic["health"]["summary"] == "probed 0"

    async def broken() -> tuple[bool, str]:
        raise RuntimeError("bug")

    await jobs.run("idle", broken)
    assert (await manager.status())["periodic"]["idle"] == {
        **manager.jobs["idle"].__dict__,
        "ok": False,
        "summary": "RuntimeError: bug",
    }


async def test_the_scheduler_runs_each_job_at_its_interval(world: World) -> None:
    manager = await running(world, "cloud-offload")
    jobs = PeriodicJobs(manager, remote_interval_s=45)
    scheduler = jobs.start()
    try:
        intervals = {job.id: job.trigger.interval.total_seconds() for job in scheduler.get_jobs()}
        assert intervals == {"health": 10.0, "remotes": 45.0, "drift": 30.0, "idle": 30.0}
    finally:
        jobs.shutdown()
    await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs on the loop's next turn
    assert not scheduler.running


async def test_a_process_member_is_probed_and_a_passing_probe_is_announced(world: World) -> None:
    manager = await running(world, "embedded")
    healthy: list[str] = []
    jobs = PeriodicJobs(manager, on_healthy=healthy.append)
    assert await jobs.probe_health() == (True, "probed 1")
    assert healthy == ["smollm2-135m"]  # the router half-opens the model's circuit on this
    world.now[0] += 10
    world.health.unhealthy.add("smollm2-135m")
    ok, summary = await jobs.probe_health()
    assert not ok and "smollm2-135m" in summary
    assert member(await manager.status(), "smollm2-135m")["state"] == "unhealthy"
    assert healthy == ["smollm2-135m"]


async def test_a_probe_that_times_out_while_stackd_has_a_request_on_the_engine_is_not_unhealthy(
    world: World,
) -> None:
    manager = await running(world, "embedded")
    jobs = PeriodicJobs(manager)
    world.health.timing_out.add("smollm2-135m")
    with manager.live_roles.in_flight.using("smollm2-135m"):  # a single-slot engine busy generating
        assert await jobs.probe_health() == (True, "probed 1")
    assert member(await manager.status(), "smollm2-135m")["state"] == "running"
    world.now[0] += 10
    ok, _ = await jobs.probe_health()  # no request of ours on it: a timeout is a real failure
    assert not ok
    assert member(await manager.status(), "smollm2-135m")["state"] == "unhealthy"


class WordyHealth(MemoryHealth):
    """An engine that answers, with an error whose words say "within": not a timeout."""

    async def check(self, name: str, model: Model) -> None:
        raise DriverUnavailable(f"{name}: health endpoint answered 503: model not loaded within its warm-up")


async def test_busy_is_a_timed_out_probe_not_an_error_that_says_within(world: World) -> None:
    world.health = WordyHealth()
    manager = await running(world, "embedded")
    jobs = PeriodicJobs(manager)
    with manager.live_roles.in_flight.using("smollm2-135m"):  # busy, but the engine did answer
        ok, summary = await jobs.probe_health()
    assert not ok and "answered 503" in summary
    assert member(await manager.status(), "smollm2-135m")["state"] == "unhealthy"


async def test_a_failed_probe_of_an_engine_says_nothing_of_the_engine_a_later_switch_starts(
    world: World,
) -> None:
    """CI once saw "unhealthy" right after a successful switch: a probe of the engine before
    had failed (it was being stopped), and that verdict stuck to the new engine."""
    manager = await running(world, "embedded")
    jobs = PeriodicJobs(manager)
    world.health.unhealthy.add("smollm2-135m")
    assert not (await jobs.probe_health())[0]
    sent_before_the_restart = manager.wall_clock()
    for stack in ("embedded-long", "embedded"):
        assert await (await manager.submit_switch(stack)).wait() == "succeeded"
    assert member(await manager.status(), "smollm2-135m")["state"] == "running"
    # A probe sent to the old engine that answers only now is dropped too.
    manager.record_probe("smollm2-135m", False, "connection refused", started_at=sent_before_the_restart)
    assert member(await manager.status(), "smollm2-135m")["state"] == "running"
    world.now[0] += 10
    assert not (await jobs.probe_health())[0]  # the new engine's own probe still counts
    assert member(await manager.status(), "smollm2-135m")["state"] == "unhealthy"
