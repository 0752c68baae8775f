"""``/mcp`` over the in-memory world, with the MCP SDK's own client (``streamable_http_client`` +
``ClientSession``) through an ASGI transport: the tools it lists, status, a switch, a lease
acquired and released, errors as ``isError`` results, and the token on every method.

The reasoning tools against a real model: tests/e2e/test_mcp_and_logs.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from stackd.api.app import create_app
from stackd.settings import Settings
from tests.unit.test_manager_world import World, close_all, make_world

TOKEN = "mcp-test-token-0123456789"
URL = "http://127.0.0.1:8001/mcp"
VISION = "vision-qwen25vl"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    world: World = make_world(tmp_path)
    manager = world.manager()
    await manager.recover()
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN)
    app = create_app(services)
    async with in_one_task(app):
        yield app
    await close_all(world)


@asynccontextmanager
async def in_one_task(app: Any) -> AsyncIterator[None]:
    """The app's lifespan in a task of its own, as uvicorn runs it: the SDK's task group must be
    left in the task that entered it, and a fixture's setup and teardown run in two."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    try:
        yield
    finally:
        stop.set()
        await task


def http(app: Any, token: str | None = TOKEN) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), headers=headers, timeout=30)


@asynccontextmanager
async def mcp_session(app: Any) -> AsyncIterator[ClientSession]:
    async with (
        http(app) as client,
        streamable_http_client(URL, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text(result: CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


async def test_the_tools_listed_are_the_control_apis_own(app: Any) -> None:
    async with mcp_session(app) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    # No router in this app: the reasoning tools are listed only where a router answers them.
    assert sorted(tools) == ["acquire_lease", "release_lease", "status", "switch_stack"]
    switch = tools["switch_stack"].input_schema
    assert switch["required"] == ["stack"] and switch["additionalProperties"] is False
    assert "make-before-break" in (tools["switch_stack"].description or "")


async def test_status_and_a_switch_answer_what_the_http_routes_answer(app: Any) -> None:
    async with mcp_session(app) as session:
        status = await session.call_tool("status", {})
        assert not status.is_error
        assert status.structured_content["active_stack"] == "cloud-offload"
        switched = await session.call_tool("switch_stack", {"stack": "elastic-hybrid"})
        assert not switched.is_error, text(switched)
        assert switched.structured_content["state"] == "succeeded"
        after = await session.call_tool("status", {})
    assert after.structured_content["active_stack"] == "elastic-hybrid"
    async with http(app) as client:
        answer = await client.get("http://127.0.0.1:8001/status")
    assert answer.json()["active_stack"] == "elastic-hybrid"


async def test_a_lease_is_acquired_and_released(app: Any) -> None:
    async with mcp_session(app) as session:
        lease = await session.call_tool("acquire_lease", {"model": VISION, "ttl_s": 30})
        assert not lease.is_error, text(lease)
        lease_id = lease.structured_content["id"]
        assert lease.structured_content["model"] == VISION
        status = await session.call_tool("status", {})
        assert [le["id"] for le in status.structured_content["leases"]] == [lease_id]
        released = await session.call_tool("release_lease", {"lease_id": lease_id})
        assert released.structured_content["released"] is True
        again = await session.call_tool("release_lease", {"lease_id": lease_id})
    assert again.is_error and text(again).startswith("NotFound: ")


async def test_bad_arguments_and_unknown_names_are_tool_errors_that_say_what_to_fix(app: Any) -> None:
    async with mcp_session(app) as session:
        unknown = await session.call_tool("switch_stack", {"stack": "nope"})
        assert unknown.is_error
        assert "unknown stack 'nope'; valid stacks: cloud-offload" in text(unknown)
        assert unknown.structured_content["error"] == "NotFound"
        extra = await session.call_tool("switch_stack", {"stack": "embedded", "force": True})
        assert extra.is_error and "force: Extra inputs are not permitted" in text(extra)
        missing = await session.call_tool("nope", {})
    assert missing.is_error and "unknown tool 'nope'; stackd's tools: status" in text(missing)


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_without_the_token_every_method_is_refused(app: Any, token: str | None) -> None:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async with http(app, token) as client:
        client.event_hooks["response"] = [record]
        with pytest.raises(ExceptionGroup) as refused:
            async with (
                streamable_http_client(URL, http_client=client) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
        assert refused.group_contains(MCPError)
        assert statuses == [401]  # the SDK's initialize, refused before the SDK saw it
        # The front door passes a loopback GET on to FastAPI; /mcp checks the token itself.
        for method in ("GET", "POST", "DELETE"):
            answer = await client.request(method, URL, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert answer.status_code == 401, (method, answer.text)
            assert answer.json()["error"] == "Unauthorized"
            assert TOKEN not in answer.text


async def test_concurrent_first_requests_share_one_start_of_the_sdk(app: Any) -> None:
    """The SDK's session manager is started by the first /mcp request (its import is ~25 MiB
    the daemon otherwise never holds); requests that arrive meanwhile wait for the same start."""
    endpoint = app.state.mcp
    assert endpoint.sessions is None  # nothing started by the app's lifespan alone

    async def tools() -> list[str]:
        async with mcp_session(app) as session:
            return sorted(t.name for t in (await session.list_tools()).tools)

    listed = await asyncio.gather(*(tools() for _ in range(4)))
    assert listed == [["acquire_lease", "release_lease", "status", "switch_stack"]] * 4
    started = endpoint.sessions
    assert started is not None and not started.done()  # one session manager, still serving
    assert (await tools()) == listed[0] and endpoint.sessions is started
