"""Switching the demo stacks for real: a Docker engine, a real engine process (the orchestrator:
Gemma 3 270M on llama.cpp's server), the Ollama simulator, loopback cloud sims.

Done-when of issue 3 (and of issue 11 for process members): every one of the 12 ordered pairs of
the four stacks leaves exactly the target running (its always-on containers and engine
processes and nothing else of the config, one engine per member at most, its always-on Ollama
models loaded and nothing else), the role table of the target, an orchestrator that answers a
chat through the gateway, and the selection persists across a restart of the daemon
(in-process, then as a real ``stackd serve`` process) without restarting a container or
reloading a model. An engine process is stackd's child: a daemon that stops stops it, and the
restarted daemon starts it again.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_daemon, stop_daemon
from tests.integration.demo_daemon import InProcessDaemon, serve_in_process
from tests.integration.demo_world import (  # noqa: F401  (fixtures)
    STACKS,
    DemoWorld,
    WorldFactory,
    demo_worlds,
    engines_in_status,
    sims,
)

pytestmark = pytest.mark.docker

# An Eulerian circuit of the complete directed graph on the four stacks: each ordered pair once.
A, B, C, D = STACKS
TOUR = (A, B, C, D, A, C, B, D, C, A, D, B, A)
QUESTION = {
    "model": "orchestrator",
    "max_tokens": 12,
    "temperature": 0,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


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
    engines = await asyncio.to_thread(world.running_engines)
    assert engines_in_status(status) == {member: pids[0] for member, pids in engines.items()}
    orchestrator = await daemon.get("/roles/orchestrator")
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(orchestrator["health_url"])).status_code == 200
    await assert_the_orchestrator_answers(world, daemon, stack)


async def assert_the_orchestrator_answers(world: DemoWorld, daemon: InProcessDaemon, stack: str) -> None:
    """A chat with model ``orchestrator`` through the gateway gets text from the bound backend:
    the real Gemma engine of a process member, the Ollama simulator's sentence otherwise."""
    answer = await daemon.client.post("/v1/chat/completions", json=QUESTION, timeout=60)
    assert answer.status_code == 200, answer.text
    text = answer.json()["choices"][0]["message"]["content"]
    assert text.strip() and "<" not in text, text
    if world.config.models[world.roles_of(stack)["orchestrator"]].runtime.value == "process":
        assert "stackd simulator" not in text, text  # a real model wrote it


async def test_every_ordered_pair_switches_exactly_and_a_restart_keeps_the_stack(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
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
        engines_before = await asyncio.to_thread(world.engine_starts)
        assert set(engines_before) == world.expected_engines(last)
        loads = world.loads()
    assert await asyncio.to_thread(world.running_engines) == {}, "the daemon stopped; its engines live on"

    async with serve_in_process(world.path, state) as daemon:
        recovery = (await daemon.get("/status"))["recovery_detail"]
        assert recovery["action"] == "restored" and recovery["stack"] == last, recovery
        await assert_exactly(world, daemon, last)
        assert await asyncio.to_thread(world.container_starts) == before, "a container was restarted"
        assert world.loads() == loads, "an Ollama model was reloaded"
        engines_after = await asyncio.to_thread(world.engine_starts)
        assert set(engines_after) == set(engines_before)
        assert all(engines_after[m] != engines_before[m] for m in engines_after), "not a new engine"


def test_the_daemon_process_keeps_the_active_stack_across_a_restart(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = demo_worlds()
    daemon = start_daemon(tmp_path, "--no-periodic", config=str(world.path), env_extra=world.env())
    try:
        auth = {"Authorization": f"Bearer {daemon.token}"}
        switched = httpx.post(
            f"{daemon.url}/model-stacks/switch", json={"stack": "elastic-hybrid"}, headers=auth, timeout=120
        ).json()
        assert switched["state"] == "succeeded", switched["error"]
        assert world.differences("elastic-hybrid") == []
    finally:
        stop_daemon(daemon)
    before, loads = world.container_starts(), world.loads()
    assert set(before) == world.expected_containers("elastic-hybrid")
    assert world.running_engines() == {}, "the daemon stopped; its engines live on"

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
        assert set(world.engine_starts()) == world.expected_engines("elastic-hybrid") != set()
        assert engines_in_status(status) == {m: pid for m, (pid, _) in world.engine_starts().items()}
        assert world.container_starts() == before, "a container was restarted"
        assert world.loads() == loads, "an Ollama model was reloaded"
    finally:
        stop_daemon(daemon)
    assert world.running_engines() == {}
