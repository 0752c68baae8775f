"""Callers never see swapping: ``invoke_model`` with a preset bound to an on-demand GPU member and
the gateway with such a model hold a lease for the length of the call, streaming included.

The bundled config on the scripted RTX 5090: the ``vision`` preset and the gateway's ``vision``
model route to vision-qwen25vl (on demand, swap group gpu-creative with comfyui-flux); backends
are scripted and record, at each moment of a call, whether a lease holds vision.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import httpx
import pytest

from stackd.api.app import create_app
from stackd.router import ReasonRouter
from stackd.router.types import ChatRequest, Completion, StreamEvent, StreamFinish, TextDelta, Usage
from stackd.settings import Settings
from tests.unit.test_gpu_coordinator import FLUX, VISION, VISION_C, Rig, rig, settle
from tests.unit.test_manager_world import World, close_all, make_world

TOKEN = "call-leases-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class WatchingBackend:
    """Answers at once and notes, at every point of a call, whether vision is leased."""

    def __init__(self, name: str, rig: Rig) -> None:
        self.name = name
        self.request_model = name
        self.rig = rig
        self.seen: list[bool] = []

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def complete(self, request: ChatRequest) -> Completion:
        self.seen.append(self.rig.leases.holds(VISION))
        return Completion("a cat on a mat", "stop", Usage(10, 4))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        for word in ("a cat ", "on a mat"):
            self.seen.append(self.rig.leases.holds(VISION))
            yield TextDelta(word)
        self.seen.append(self.rig.leases.holds(VISION))
        yield StreamFinish("stop", Usage(10, 4))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path)
    yield w
    await close_all(w)


async def client_for(r: Rig, tmp_path: Path) -> tuple[httpx.AsyncClient, dict[str, WatchingBackend]]:
    backends = {name: WatchingBackend(name, r) for name in r.world.config.models}
    router = ReasonRouter(
        r.world.config, r.manager.live_roles, backend_factory=lambda name, session: backends[name]
    )
    settings = Settings(state_dir=tmp_path / "state")
    services = r.world.services(r.manager, settings, TOKEN, router=router, leases=r.leases)
    transport = httpx.ASGITransport(app=create_app(services))
    return httpx.AsyncClient(transport=transport, base_url="http://stackd", headers=AUTH), backends


async def test_invoke_model_on_vision_starts_it_under_a_lease_and_releases_it_after(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    c, backends = await client_for(r, tmp_path)
    async with c:
        answer = await c.post("/tools/invoke_model", json={"preset": "vision", "prompt": "what is this?"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == VISION
        assert backends[VISION].seen == [True]  # leased during the call
        assert r.leases.live() == [] and VISION_C in world.containers.running_containers  # warm after
        streamed = await c.post(
            "/tools/invoke_model", json={"preset": "vision", "prompt": "what is this?", "stream": True}
        )
        assert streamed.status_code == 200 and '"delta": "a cat "' in streamed.text.replace('":"', '": "')
        assert backends[VISION].seen[1:] == [True, True, True]  # every chunk under the lease
        assert r.leases.live() == []


async def test_the_gateway_with_vision_waits_for_flux_s_lease_instead_of_failing(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    c, backends = await client_for(r, tmp_path)
    async with c:
        flux = await r.leases.acquire(FLUX, ttl_s=300)
        body = {"model": "vision", "messages": [{"role": "user", "content": "describe"}], "stream": True}
        call = asyncio.create_task(c.post("/v1/chat/completions", json=body))
        await settle()
        assert not call.done() and [w["model"] for w in r.leases.queue()] == [VISION]
        await r.leases.release(flux.id)
        answer = await asyncio.wait_for(call, 5)
        assert answer.status_code == 200, answer.text
        chunks = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]
        assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks) == "a cat on a mat"
        assert backends[VISION].seen == [True, True, True]
        assert r.leases.live() == [] and world.containers.actions[-2:] == [("stop", FLUX), ("start", VISION)]


async def test_calls_that_do_not_start_at_an_on_demand_member_take_no_lease(
    world: World, tmp_path: Path
) -> None:
    r = await rig(world, tmp_path)
    c, backends = await client_for(r, tmp_path)
    async with c:
        body = {"model": "orchestrator", "messages": [{"role": "user", "content": "hi"}]}
        answer = await c.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert backends["orchestrator-8b"].seen == [False]
        assert VISION_C not in world.containers.running_containers
