"""Failed switches against real engines: the previous stack keeps running, and people are told why.

Done-when of issue 3: a container that fails its health check, an image that is missing, an
Ollama pull that fails half-way and an Ollama that is down each leave the previous stack fully
running (containers, loaded models, role table, persisted selection) and a clear error in the
switch's response and in ``/status``. Issue 11, for process members: an engine process that
exits before it is ready (llama.cpp's server given a model file that does not exist) fails the
switch the same way, with its exit and its last log lines; an engine started by the failed
switch is stopped again; and the previous stack's engine is the very process it was (same PID,
same start time) whatever failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration.demo_daemon import InProcessDaemon, serve_in_process
from tests.integration.demo_world import (  # noqa: F401  (fixtures)
    DemoWorld,
    ModelChange,
    WorldFactory,
    demo_worlds,
    sims,
)

pytestmark = pytest.mark.docker

MISSING_IMAGE = "stackd-test-missing:none"
MISSING_MODEL = "/nonexistent/stackd-test/gemma-3-270m.gguf"

Engines = dict[str, tuple[int, float]]


async def assert_started_on(world: DemoWorld, daemon: InProcessDaemon, stack: str) -> Engines:
    """The daemon's first start applied ``stack`` (the config's default) and only it runs; returns
    the engine processes it runs (member -> PID and start time)."""
    assert (await daemon.get("/model-stacks"))["active"] == stack
    assert await asyncio.to_thread(world.differences, stack) == []
    return await asyncio.to_thread(world.engine_starts)


async def assert_previous_intact(
    world: DemoWorld,
    daemon: InProcessDaemon,
    previous: str,
    switch: Mapping[str, Any],
    engines: Engines,
    *phrases: str,
) -> None:
    """The switch was rolled back, ``previous`` runs exactly (its engine processes are the very
    ones of ``engines``), and its error is in the answer and /status."""
    error = switch["error"] or ""
    assert switch["state"] == "rolled_back", switch
    for phrase in (*phrases, f"'{previous}' is running as before"):
        assert phrase in error, f"{phrase!r} not in the error: {error}"
    assert await asyncio.to_thread(world.differences, previous) == []
    assert await asyncio.to_thread(world.engine_starts) == engines, "an engine was restarted or lost"
    assert await daemon.bindings() == (previous, world.roles_of(previous))
    assert (await daemon.get("/model-stacks"))["active"] == previous
    status = await daemon.get("/status")
    assert status["active_stack"] == previous and status["drift"] == [], status["drift"]
    assert status["last_switch"]["switch_id"] == switch["switch_id"]
    assert status["last_switch"]["state"] == "rolled_back"
    assert status["last_switch"]["error"] == error


@pytest.mark.parametrize(
    ("member", "previous", "target", "healthcheck", "why"),
    [
        # Docker's HEALTHCHECK (wget /health) never turns healthy; the orchestrator's engine
        # process, in both stacks, runs on untouched.
        ("embeddings-nomic", "ollama-hybrid", "cloud-offload", True, "Docker health status is"),
        # No HEALTHCHECK: stackd's own HTTP probe of /health gets 404. The orchestrator's engine,
        # started by this switch, is stopped by its undo.
        ("embeddings-nomic", "ollama-only", "elastic-hybrid", False, "answered HTTP 404"),
    ],
)
async def test_a_member_failing_its_health_check_leaves_the_previous_stack_running(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
    member: str,
    previous: str,
    target: str,
    healthcheck: bool,
    why: str,
) -> None:
    change = ModelChange(env={"FAIL_HEALTH": "1"}, start_timeout_s=3, docker_healthcheck=healthcheck)
    world = demo_worlds({member: change}, previous)
    async with serve_in_process(world.path, tmp_path / "state") as daemon:
        engines = await assert_started_on(world, daemon, previous)
        assert set(engines) == world.expected_engines(previous)
        switch = await daemon.switch(target)
        container = world.config.models[member].docker.container  # type: ignore[union-attr]
        await assert_previous_intact(
            world,
            daemon,
            previous,
            switch,
            engines,
            f"start_container {member}",
            f"container '{container}' of model '{member}' was not ready within 3 s",
            why,
        )
        if not engines:  # the orchestrator's engine was started, and stopped again by the undo
            assert any(e.get("step", {}).get("kind") == "start_process" for e in switch["events"])


async def test_an_engine_process_that_exits_before_it_is_ready_leaves_the_previous_stack_running(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = demo_worlds({"orchestrator-8b": ModelChange(model_path=MISSING_MODEL)}, "ollama-only")
    async with serve_in_process(world.path, tmp_path / "state") as daemon:
        engines = await assert_started_on(world, daemon, "ollama-only")
        switch = await daemon.switch("cloud-offload")
        await assert_previous_intact(
            world,
            daemon,
            "ollama-only",
            switch,
            engines,
            "start_process orchestrator-8b",
            "process member 'orchestrator-8b' exited with code 1 before it was ready",
            f"Model path does not exist: {MISSING_MODEL}",  # its last log line
            f"full log: {tmp_path / 'state' / 'logs' / 'orchestrator-8b.log'}",
        )


async def test_a_missing_image_leaves_the_previous_stack_running(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = demo_worlds({"embeddings-nomic": ModelChange(image=MISSING_IMAGE)}, "ollama-hybrid")
    async with serve_in_process(world.path, tmp_path / "state") as daemon:
        engines = await assert_started_on(world, daemon, "ollama-hybrid")
        switch = await daemon.switch("cloud-offload")
        await assert_previous_intact(
            world,
            daemon,
            "ollama-hybrid",
            switch,
            engines,
            "start_container embeddings-nomic",
            f"image '{MISSING_IMAGE}' not found locally",
        )


async def test_an_ollama_pull_failing_half_way_leaves_the_previous_stack_running(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = demo_worlds()
    async with serve_in_process(world.path, tmp_path / "state") as daemon:
        engines = await assert_started_on(world, daemon, "cloud-offload")
        world.sims.ollama.set_fault("pull_fails_halfway")
        switch = await daemon.switch("elastic-hybrid")
        await assert_previous_intact(
            world, daemon, "cloud-offload", switch, engines, "pull_model", "max retries exceeded"
        )
        progress = [e for e in switch["events"] if e["type"] == "pull_progress" and e.get("completed")]
        assert progress, "the pull failed before any progress: not half-way"
        assert all(
            world.sims.ollama.server.pulled_file(t) is None  # type: ignore[attr-defined]
            for t in ("nemotron-elastic:12b", "nemotron-elastic:9b", "nemotron-elastic:6b")
        )
        world.sims.ollama.set_fault("none")
        assert (await daemon.switch("elastic-hybrid"))["state"] == "succeeded"
        assert await asyncio.to_thread(world.differences, "elastic-hybrid") == []


async def test_ollama_down_leaves_the_previous_stack_running(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = demo_worlds()
    async with serve_in_process(world.path, tmp_path / "state") as daemon:
        engines = await assert_started_on(world, daemon, "cloud-offload")
        world.sims.ollama.set_fault("refuse")
        switch = await daemon.switch("ollama-only")
        status = await daemon.get("/status")
        assert "not reachable" in status["engines"]["ollama"]
        world.sims.ollama.set_fault("none")  # so that /api/ps can show that nothing was loaded
        await assert_previous_intact(
            world,
            daemon,
            "cloud-offload",
            switch,
            engines,
            f"Ollama not reachable at {world.sims.ollama.url}",
        )
