"""Slice routing through the daemon's app: the gateway and invoke_model route the bare preset
name, the kill switch is set over the API, and /slices, /status, /usage and /metrics show it all.
The router is real; its backends are scripted per model (6b answers prose)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from stackd.api.app import create_app
from stackd.api.metrics import register_slice_metrics
from stackd.gpu.leases import LeaseCoordinator
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.slices import SliceRouter
from stackd.router.types import ChatRequest, Completion, StreamEvent, StreamFinish, TextDelta, Usage
from stackd.services import Services
from stackd.settings import Settings
from stackd.state.slice_audit import SliceAudit
from tests.unit.slice_world import PERSON_FORMAT, WEATHER_TOOL, FixedDigests
from tests.unit.test_api import AUTH, TOKEN
from tests.unit.test_manager_world import close_all, make_world

VALID = '{"name": "Ada", "age": 36}'
NOON = 1_764_590_400.0  # 2025-12-01 12:00 UTC


class SliceBackend:
    def __init__(self, name: str, text: str) -> None:
        self.name = self.request_model = name
        self.text = text
        self.asked: list[ChatRequest] = []

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def complete(self, request: ChatRequest) -> Completion:
        self.asked.append(request)
        return Completion(self.text, "stop", Usage(12, 8))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        yield TextDelta(self.text)
        yield StreamFinish("stop", Usage(12, 8))


@dataclass
class App:
    client: httpx.AsyncClient
    backends: dict[str, SliceBackend]
    slices: SliceRouter


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async for built in build(tmp_path, TOKEN):
        transport = httpx.ASGITransport(app=built[0])
        async with httpx.AsyncClient(transport=transport, base_url="http://stackd", headers=AUTH) as client:
            yield App(client, built[1], built[2])


async def build(
    tmp_path: Path, token: str
) -> AsyncIterator[tuple[Any, dict[str, SliceBackend], SliceRouter]]:
    world = make_world(tmp_path)
    manager = world.manager()
    await manager.recover()
    stack = world.config.stacks["elastic-hybrid"]
    roles = LiveRoles(RoleTable("elastic-hybrid", dict(stack.roles), frozenset(stack.member_names)))
    backends = {
        name: SliceBackend(name, "prose" if name == "elastic-6b" else VALID) for name in world.config.models
    }
    router = ReasonRouter(world.config, roles, backend_factory=lambda name, session: backends[name])
    slices = SliceRouter(router, clock=lambda: NOON)  # outside the bundled 01:00-05:00 UTC time pin
    slices.attach(SliceAudit(tmp_path / "stackd.db"), tmp_path, FixedDigests())
    services = Services(
        settings=Settings(state_dir=tmp_path / "state"), roles=roles, manager=manager,
        read_hardware=lambda: world.hardware, token=token, token_source="test", leases=LeaseCoordinator(manager), router=router,
        slices=slices,
    )  # fmt: skip
    registry = CollectorRegistry()
    register_slice_metrics(registry, slices)
    yield create_app(services, registry=registry), backends, slices
    await slices.aclose()
    await router.aclose()
    await close_all(world)


def chat(**fields: object) -> dict[str, object]:
    return {"model": "elastic", "messages": [{"role": "user", "content": "Who?"}], **fields}


async def test_the_gateway_promotes_an_invalid_answer_and_reports_it_everywhere(app: App) -> None:
    r = await app.client.post("/v1/chat/completions", json=chat(response_format=PERSON_FORMAT))
    assert r.status_code == 200, r.text
    body = r.json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"name": "Ada", "age": 36}
    routed = body["stackd"]["slices"]
    assert (routed["slice"], routed["validated"], routed["policy_version"]) == ("9b", True, "2026-12-01.1")
    assert [t["outcome"] for t in routed["tries"]] == ["promoted", "accepted"]
    assert routed["model_digest"] == "sha256:digest-of-elastic-9b" and routed["audit_id"] == 1
    status = (await app.client.get("/status")).json()
    assert status["slices"]["slices"]["elastic:6b"]["promotions"] == 1
    assert status["slices"]["slices"]["elastic:9b"]["acceptance"] == 1.0
    usage = (await app.client.get("/usage")).json()
    assert usage["slices"]["served"][0]["slice"] == "9b"
    metrics = (await app.client.get("/metrics")).text
    assert 'stackd_slice_promotions_total{preset="elastic",slice="6b"} 1.0' in metrics
    assert 'stackd_slice_acceptance{preset="elastic",slice="6b"} 0.0' in metrics


async def test_a_named_slice_is_a_floor_and_a_plain_answer_needs_no_promotion(app: App) -> None:
    r = await app.client.post("/v1/chat/completions", json=chat(model="elastic:6b"))
    assert r.json()["stackd"]["slices"]["slice"] == "6b"  # no validator: prose is an answer
    r = await app.client.post(
        "/v1/chat/completions", json=chat(model="elastic:12b", response_format=PERSON_FORMAT)
    )
    assert r.json()["stackd"]["slices"]["slice"] == "12b"


async def test_the_kill_switch_is_set_over_the_api_with_the_token(app: App) -> None:
    refused = await app.client.post("/slices/kill-switch", json={"on": True}, headers={"Authorization": ""})
    assert refused.status_code == 401
    on = await app.client.post("/slices/kill-switch", json={"on": True, "reason": "incident"})
    assert on.status_code == 200 and on.json()["kill_switch"] is True
    routed = (await app.client.post("/v1/chat/completions", json=chat(model="elastic:6b"))).json()["stackd"][
        "slices"
    ]
    assert (routed["slice"], routed["decided_by"]) == ("12b", "kill_switch")
    shown = (await app.client.get("/slices")).json()
    assert (
        shown["controls"]["kill_switch_reason"] == "incident"
        and shown["recent"][0]["decided_by"] == "kill_switch"
    )
    await app.client.post("/slices/kill-switch", json={"on": False})
    routed = (await app.client.post("/v1/chat/completions", json=chat())).json()["stackd"]["slices"]
    assert routed["slice"] == "6b"


async def test_a_valid_tool_call_is_openais_tool_calls(app: App) -> None:
    app.backends["elastic-6b"].text = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})
    body = (await app.client.post("/v1/chat/completions", json=chat(tools=[WEATHER_TOOL]))).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {
        "city": "Oslo"
    }


async def test_a_routed_stream_sends_the_validated_answer(app: App) -> None:
    r = await app.client.post("/v1/chat/completions", json=chat(stream=True, response_format=PERSON_FORMAT))
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content", "")
        for e in events[:-1]
        if json.loads(e)["choices"]
    )
    assert json.loads(text) == {"name": "Ada", "age": 36}


def sse_events(text: str) -> list[dict[str, Any]]:
    data = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


RECORD = ("preset", "slice", "decided_by", "policy_version", "model_digest", "validated", "check")


async def test_a_routed_stream_carries_the_same_slice_record_as_an_answer(app: App) -> None:
    answer = (await app.client.post("/v1/chat/completions", json=chat(response_format=PERSON_FORMAT))).json()
    r = await app.client.post("/v1/chat/completions", json=chat(stream=True, response_format=PERSON_FORMAT))
    events = sse_events(r.text)
    [finish] = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    streamed, answered = finish["stackd"]["slices"], answer["stackd"]["slices"]
    assert {k: streamed[k] for k in RECORD} == {k: answered[k] for k in RECORD}
    assert (streamed["slice"], streamed["validated"], streamed["model_digest"]) == (
        "9b",
        True,
        "sha256:digest-of-elastic-9b",
    )
    assert [t["outcome"] for t in streamed["tries"]] == ["promoted", "accepted"]
    assert streamed["audit_id"] == answered["audit_id"] + 1  # each call has its own audit row
    # buffer-then-stream: the validated text arrives whole, before the finish
    [content] = [
        e["choices"][0]["delta"]["content"] for e in events if e["choices"][0]["delta"].get("content")
    ]
    assert json.loads(content) == {"name": "Ada", "age": 36}


async def test_a_routed_stream_whose_answer_is_invalid_says_so(app: App) -> None:
    app.backends["elastic-9b"].text = app.backends["elastic-12b"].text = "still prose"
    r = await app.client.post("/v1/chat/completions", json=chat(stream=True, response_format=PERSON_FORMAT))
    [finish] = [e for e in sse_events(r.text) if e["choices"] and e["choices"][0]["finish_reason"]]
    assert finish["stackd"]["slices"]["validated"] is False and finish["stackd"]["slices"]["slice"] == "12b"


async def test_a_routed_stream_sends_a_valid_tool_call_as_tool_calls(app: App) -> None:
    app.backends["elastic-6b"].text = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})
    r = await app.client.post("/v1/chat/completions", json=chat(stream=True, tools=[WEATHER_TOOL]))
    events = sse_events(r.text)
    [calls] = [
        e["choices"][0]["delta"]["tool_calls"] for e in events if e["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["index"] == 0 and json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    [finish] = [e for e in events if e["choices"][0]["finish_reason"]]
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert finish["stackd"]["slices"]["tool_call"]["name"] == "get_weather"


async def test_each_slice_is_asked_for_the_calls_response_format(app: App) -> None:
    await app.client.post("/v1/chat/completions", json=chat(response_format=PERSON_FORMAT))
    assert app.backends["elastic-6b"].asked[-1].response_format == PERSON_FORMAT
    assert app.backends["elastic-9b"].asked[-1].response_format == PERSON_FORMAT


async def test_invoke_model_routes_the_bare_preset(app: App) -> None:
    args = {
        "preset": "elastic",
        "prompt": "Who?",
        "options": {"response_format": PERSON_FORMAT, "caller": "compliance"},
    }
    body = (await app.client.post("/tools/invoke_model", json=args)).json()
    assert body["backend"] == "elastic-12b" and body["slices"]["decided_by"] == "caller:compliance"


async def test_an_unusable_schema_is_a_422_in_openais_shape(app: App) -> None:
    bad = {"type": "json_schema", "json_schema": {"schema": {"type": 7}}}
    r = await app.client.post("/v1/chat/completions", json=chat(response_format=bad))
    assert r.status_code == 422 and "not a valid JSON Schema" in r.json()["error"]["message"]


async def test_the_cli_views_render_what_the_api_says(app: App) -> None:
    from rich.console import Console

    from stackd.cli.slices_view import slices_renderable, usage_slices

    await app.client.post("/v1/chat/completions", json=chat(response_format=PERSON_FORMAT))
    console = Console(record=True, width=200)
    console.print(slices_renderable((await app.client.get("/slices")).json()))
    console.print(usage_slices((await app.client.get("/usage")).json()))
    text = console.export_text()
    assert "kill switch: off" in text and "elastic: policy 2026-12-01.1, slices 6b < 9b < 12b" in text
    assert "budget elastic:12b: 0/2000000 tokens today" in text
    assert "elastic:6b" in text and "0%" in text and "100%" in text  # acceptance of 6b and 9b
    assert "routed answers" in text and text.count("per slice since start") == 2  # show, and usage


async def test_the_mcp_invoke_model_tool_is_routed_too(tmp_path: Path) -> None:
    from tests.unit.test_mcp_server import TOKEN as MCP_TOKEN
    from tests.unit.test_mcp_server import in_one_task, mcp_session

    async for mcp_app, _, _ in build(tmp_path, MCP_TOKEN):
        async with in_one_task(mcp_app), mcp_session(mcp_app) as session:
            args = {"preset": "elastic", "prompt": "Who?", "options": {"response_format": PERSON_FORMAT}}
            result = await session.call_tool("invoke_model", args)
        assert not result.is_error
        record = result.structured_content or {}
        assert record["slices"]["slice"] == "9b" and record["backend"] == "elastic-9b"


async def test_retrieved_chunks_is_a_json_schema_integer(app: App) -> None:
    """100.0 is an integer to JSON Schema (schemathesis sends it); "3" and 2.5 are not."""
    r = await app.client.post("/v1/chat/completions", json=chat(retrieved_chunks=6.0))
    assert r.status_code == 200 and r.json()["stackd"]["slices"]["slice"] == "12b"  # 6 chunks
    for bad in ("3", 2.5, True, -1):
        assert (
            await app.client.post("/v1/chat/completions", json=chat(retrieved_chunks=bad))
        ).status_code == 422
    args = {"preset": "elastic", "prompt": "Who?", "options": {"retrieved_chunks": 3.0}}
    assert (await app.client.post("/tools/invoke_model", json=args)).json()["slices"]["slice"] == "9b"
