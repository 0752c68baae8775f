"""Calls that wake the day's stack (stackd/manager/day.py, stackd/api/gateway.py, tools.py,
mcp_server.py) over the in-memory world on a fake clock: a streaming caller gets its SSE stream
at once, with ``: stackd: waiting ...`` comments while the stack wakes, then the answer and
``stackd.wake``; a stream whose wake passes its bound ends with the 503's error event;
``/tools/invoke_model``, ``/tools/reason`` (a reason chain whose first role the dozing stack
lacks) and MCP's tools wake the stack and say how long they waited.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from starlette.types import Message

from stackd.api.app import create_app
from stackd.config.models import StacksConfig
from stackd.manager import ModelStackManager
from stackd.manager.day import DayDriver
from stackd.router import ReasonRouter
from stackd.settings import Settings
from tests.unit.test_day_driver import AUTH, TOKEN, Answering, driver, settled, started
from tests.unit.test_day_policy import DAY, NIGHT, at, day_config
from tests.unit.test_manager_world import World, close_all, make_world
from tests.unit.test_mcp_server import URL, http, in_one_task

VISION_MODEL = "vision-qwen25vl"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path, day_config(idle_after_s=600))
    w.now[0] = at("2026-03-30 09:00")  # Monday, the day stack's window
    yield w
    await close_all(w)


def with_stack(config: StacksConfig, stack: str, **update: Any) -> StacksConfig:
    stacks = {**config.stacks, stack: config.stacks[stack].model_copy(update=update)}
    return config.model_copy(update={"stacks": stacks})


async def dozing(world: World) -> tuple[ModelStackManager, DayDriver]:
    """The day stack ran 600 s without a call and went down to the night stack."""
    manager = await started(world, DAY)
    day = driver(world, manager)
    await day.tick()
    world.now[0] += 600
    assert (await day.tick()).intended == NIGHT
    await settled(manager)
    assert manager.active_stack == NIGHT
    return manager, day


def app_of(
    world: World, manager: ModelStackManager, day: DayDriver, tmp_path: Path
) -> tuple[Any, dict[str, Answering]]:
    backends = {name: Answering(name) for name in world.config.models}
    router = ReasonRouter(
        world.config, manager.live_roles, backend_factory=lambda name, session: backends[name]
    )
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, router=router, day=day)
    return create_app(services), backends


def sse_data(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


async def test_a_streaming_caller_hears_at_once_that_it_waits_for_the_wake_then_gets_the_answer(
    world: World, tmp_path: Path
) -> None:
    manager, day = await dozing(world)
    app, backends = app_of(world, manager, day, tmp_path)
    # A job ahead of the wake's switch on the manager's worker keeps the stack down for now.
    gate = asyncio.Event()
    blocker = asyncio.create_task(manager.run_exclusive(gate.wait))
    body = json.dumps(
        {"model": "vision", "stream": True, "messages": [{"role": "user", "content": "describe"}]}
    ).encode()
    sent: list[Message] = []
    arrived, gone = asyncio.Event(), asyncio.Event()
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        arrived.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"stackd"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8001),
    }
    call = asyncio.create_task(app(scope, receive, send))
    while not any(m.get("body", b"").startswith(b": stackd: waiting") for m in sent):
        arrived.clear()
        await asyncio.wait_for(arrived.wait(), 10)
    # The stream is open and says why it is quiet, while the stack is still down.
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream") in sent[0]["headers"]
    comment = next(m["body"] for m in sent if m.get("body", b"").startswith(b":")).decode()
    assert comment.startswith(": stackd: waiting up to 120 s for vision: stack 'cloud-offload' "), comment
    assert comment.endswith("\n\n") and manager.active_stack == NIGHT and not call.done()
    world.now[0] += 7  # the fake clock: the wake took 7 s
    gate.set()
    await blocker
    await asyncio.wait_for(call, 10)
    gone.set()
    text = b"".join(m.get("body", b"") for m in sent).decode()
    chunks = sse_data(text)
    assert chunks[1]["choices"][0]["delta"]["content"] == f"answered by {VISION_MODEL}"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    wake = chunks[-1]["stackd"]["wake"]
    assert wake["woke"] == DAY and wake["waited_s"] == 7.0 and wake["switch_id"]
    assert text.endswith("data: [DONE]\n\n") and manager.active_stack == DAY
    assert backends[VISION_MODEL].calls == 1 and day.wakes == 1


async def test_a_stream_whose_wake_passes_its_bound_ends_with_the_503_error_event(
    world: World, tmp_path: Path
) -> None:
    rule = world.config.stacks[DAY].idle
    assert rule is not None
    world.config = with_stack(
        world.config, DAY, idle=rule.model_copy(update={"wake_wait_role_s": {"vision": 0.2}})
    )
    manager, day = await dozing(world)
    app, _ = app_of(world, manager, day, tmp_path)
    gate = asyncio.Event()
    blocker = asyncio.create_task(manager.run_exclusive(gate.wait))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stackd", headers=AUTH
    ) as c:
        body = {"model": "vision", "stream": True, "messages": [{"role": "user", "content": "describe"}]}
        answer = await asyncio.wait_for(c.post("/v1/chat/completions", json=body), 10)
    gate.set()
    await blocker
    await settled(manager)
    assert answer.status_code == 200 and answer.text.startswith(": stackd: waiting up to "), answer.text
    error = sse_data(answer.text)[-1]["error"]
    assert "waited 0.2 s for stack 'cloud-offload' to wake (its switch goes on)" in error["message"], error
    assert error["code"] == "all_strategies_failed" or error["type"] == "server_error"
    assert answer.text.endswith("data: [DONE]\n\n") and manager.active_stack == DAY  # the switch went on


async def test_invoke_model_and_a_stream_of_it_wake_the_stack_and_say_how_long_they_waited(
    world: World, tmp_path: Path
) -> None:
    manager, day = await dozing(world)
    app, backends = app_of(world, manager, day, tmp_path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stackd", headers=AUTH
    ) as c:
        called = c.post("/tools/invoke_model", json={"preset": "vision", "prompt": "describe"})
        streamed = c.post(
            "/tools/invoke_model", json={"preset": "vision", "prompt": "describe", "stream": True}
        )
        answer, stream = await asyncio.wait_for(asyncio.gather(called, streamed), 10)
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["answer"] == f"answered by {VISION_MODEL}" and record["backend"] == VISION_MODEL
    assert record["wake"]["woke"] == DAY and record["wake"]["waited_s"] >= 0 and record["wake"]["switch_id"]
    assert stream.text.startswith(": stackd: waiting up to 120 s for vision: stack 'cloud-offload'"), (
        stream.text
    )
    done = sse_data(stream.text)[-1]
    assert done["done"] is True and done["wake"]["woke"] == DAY
    assert day.wakes == 1 and backends[VISION_MODEL].calls == 2 and manager.active_stack == DAY


async def test_reason_wakes_the_stack_when_its_chain_needs_a_role_the_dozing_stack_lacks(
    world: World, tmp_path: Path
) -> None:
    # The night stack without deep_reasoning: effort 9's chain starts with cloud_gpu (that role).
    roles = {r: m for r, m in world.config.stacks[NIGHT].roles.items() if r != "deep_reasoning"}
    world.config = with_stack(world.config, NIGHT, roles=roles)
    manager, day = await dozing(world)
    app, backends = app_of(world, manager, day, tmp_path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stackd", headers=AUTH
    ) as c:
        # Effort 2's chain is answered by cloud_api's gemini-flash, which both stacks have: no wake.
        low = await c.post("/tools/reason", json={"problem": "2+3?", "effort": 2})
        assert low.status_code == 200 and "wake" not in low.json() and manager.active_stack == NIGHT
        high = await asyncio.wait_for(c.post("/tools/reason", json={"problem": "2+3?", "effort": 9}), 10)
    assert high.status_code == 200, high.text
    record = high.json()
    assert record["strategy"] == "cloud_gpu" and record["backend"] == "deepseek-r1-cloud"
    assert record["wake"]["woke"] == DAY and manager.active_stack == DAY and day.wakes == 1
    assert backends["deepseek-r1-cloud"].calls == 1


async def test_mcp_tools_wake_the_stack_and_their_record_says_so(world: World, tmp_path: Path) -> None:
    manager, day = await dozing(world)
    app, backends = app_of(world, manager, day, tmp_path)
    async with (
        in_one_task(app),
        http(app, TOKEN) as client,
        streamable_http_client(URL, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await asyncio.wait_for(
            session.call_tool("invoke_model", {"preset": "vision", "prompt": "describe"}), 10
        )
    assert not result.is_error, result
    structured = result.structured_content
    assert structured is not None and structured["answer"] == f"answered by {VISION_MODEL}"
    assert structured["wake"]["woke"] == DAY and structured["wake"]["waited_s"] >= 0
    assert manager.active_stack == DAY and day.wakes == 1 and backends[VISION_MODEL].calls == 1
