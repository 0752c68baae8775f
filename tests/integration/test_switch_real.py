"""Switching the demo stacks for real: a Docker engine, the Ollama simulator, loopback cloud sims.

Done-when of issue 3: every one of the 12 ordered pairs of the four stacks leaves exactly the
target running (its always-on containers and nothing else of the config, its always-on Ollama
models loaded and nothing else), the role table of the target, and the selection persists
across a restart of the daemon (in-process, then as a real ``stackd serve`` process) without
restarting or reloading anything.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_daemon, stop_daemon
from tests.integration.demo_daemon import InProcessDaemon, serve_in_process
from tests.integration.demo_world import STACKS, DemoWorld, WorldFactory, demo_worlds, sims  # noqa: F401

pytestmark = pytest.mark.docker

# An Eulerian circuit of the complete directed graph on the four stacks: each ordered pair once.
A, B, C, D = STACKS
TOUR = (A, B, C, D, A, C, B, D, C, A, D, B, A)


def test_the_tour_covers_every_ordered_pair_once() -> None:
    pairs = list(itertools.pairwise(TOUR))
    assert len(pairs) == len(set(pairs)) == 12
    assert set(pairs) == set(itertools.permutations(STACKS, 2))


async def assert_exactly(world: DemoWorld, daemon: InProcessDaemon, stack: str) -> None:
    """Only ``stack`` runs, the API says so, and its orchestrator answers."""
    assert await asyncio.to_thread(world.differences, stack) == []
    assert await daemon.bindings() == (stack, world.roles_of(stack))
    assert (await daemon.get("/model-stacks"))["active"] == stack
    status = await daemon.get("/status")
    assert status["active_stack"] == stack and status["drift"] == [], status["drift"]
    orchestrator = await daemon.get("/roles/orchestrator")
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(orchestrator["health_url"])).status_code == 200


async def test_every_ordered_pair_switches_exactly_and_a_restart_keeps_the_stack(
    demo_worlds: WorldFactory, tmp_path: Path,  # noqa: F811
) -> None:
    world = demo_worlds()
    state = tmp_path / "state"
    async with serve_in_process(world.path, state) as daemon:
        recovery = (await daemon.get("/status"))["recovery_detail"]
        assert recovery["action"] == "first_start" and recovery["stack"] == A, recovery
        await assert_exactly(world, daemon, A)
        for previous, target in itertools.pairwise(TOUR):
            switch = await daemon.switch(target)
            assert (switch["from_stack"], switch["stack"]) == (previous, target)
            assert switch["state"] == "succeeded", f"{previous} -> {target}: {switch['error']}"
            await assert_exactly(world, daemon, target)
        last = TOUR[-1]
        before = await asyncio.to_thread(world.container_starts)
        loads = world.loads()

    async with serve_in_process(world.path, state) as daemon:
        recovery = (await daemon.get("/status"))["recovery_detail"]
        assert recovery["action"] == "restored" and recovery["stack"] == last, recovery
        await assert_exactly(world, daemon, last)
        assert await asyncio.to_thread(world.container_starts) == before, "a container was restarted"
        assert world.loads() == loads, "an Ollama model was reloaded"


def test_the_daemon_process_keeps_the_active_stack_across_a_restart(
    demo_worlds: WorldFactory, tmp_path: Path,  # noqa: F811
) -> None:
    world = demo_worlds()
    daemon = start_daemon(tmp_path, "--no-periodic", config=str(world.path), env_extra=world.env())
    try:
        auth = {"Authorization": f"Bearer {daemon.token}"}
        switched = httpx.post(f"{daemon.url}/model-stacks/switch", json={"stack": "elastic-hybrid"},
                              headers=auth, timeout=120).json()
        assert switched["state"] == "succeeded", switched["error"]
        assert world.differences("elastic-hybrid") == []
    finally:
        stop_daemon(daemon)
    before, loads = world.container_starts(), world.loads()
    assert set(before) == world.expected_containers("elastic-hybrid")

    daemon = start_daemon(tmp_path, "--no-periodic", config=str(world.path), env_extra=world.env())
    try:
        assert httpx.get(f"{daemon.url}/model-stacks", timeout=10).json()["active"] == "elastic-hybrid"
        status = httpx.get(f"{daemon.url}/status", timeout=10).json()
        assert status["recovery_detail"]["action"] == "restored", status["recovery"]
        assert status["drift"] == []
        roles = httpx.get(f"{daemon.url}/roles", timeout=10).json()
        assert roles["stack"] == "elastic-hybrid"
        assert {r["role"]: r["model"] for r in roles["roles"]} == world.roles_of("elastic-hybrid")
        assert world.differences("elastic-hybrid") == []
        assert world.container_starts() == before, "a container was restarted"
        assert world.loads() == loads, "an Ollama model was reloaded"
    finally:
        stop_daemon(daemon)
