"""The gateway and the tools over real HTTP (uvicorn), with the official ``openai`` client as the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI

from stackd.api.auth import bearer_guard
from stackd.api.gateway import build_gateway_router
from stackd.api.tools import build_tools_router
from stackd.config.models import StacksConfig
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.sim.control import Fault
from stackd.sim.openai import OpenAISim

TOKEN = "gateway-test-token"
ANSWER = "Hello from the stackd simulator."


def gateway_config(primary: str, fallback: str, elastic: str) -> StacksConfig:
    def openai_model(endpoint: str, served: str) -> dict[str, Any]:
        return {
            "runtime": "docker",
            "placement": "gpu",
            "api": "openai",
            "endpoint": f"{endpoint}/v1",
            "served_model": served,
            "docker": {"container": served},
        }

    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "roles": {"orchestrator": {"required": True}, "reasoning": {}, "vision": {}},
            "models": {
                "primary": openai_model(primary, "primary-served"),
                "fallback": openai_model(fallback, "fallback-served"),
                **{f"elastic-{s}": openai_model(elastic, f"elastic-{s}-served") for s in ("6b", "9b", "12b")},
            },
            "stacks": {
                "s": {
                    "roles": {"orchestrator": "fallback", "reasoning": "primary"},
                    "members": ["elastic-6b", "elastic-9b", "elastic-12b"],
                }
            },
            "reason": {
                "strategies": {
                    "first": {"role": "reasoning"},
                    "last": {"role": "orchestrator", "queued": True},
                },
                "default_chain": ["first", "last"],
                "effort": [{"up_to": 10}],
                "timeouts": {"connect_s": 1, "first_token_s": 0.5, "total_s": 10},
            },
            "presets": {
                "elastic": {
                    "slices": {s: f"elastic-{s}" for s in ("6b", "9b", "12b")},
                    "default_slice": "12b",
                },
                "orchestrator": {"role": "orchestrator"},
            },
        }
    )


@dataclass
class Gateway:
    url: str
    primary: OpenAISim
    fallback: OpenAISim
    elastic: OpenAISim
    router: ReasonRouter

    def client(self, token: str = TOKEN) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=token, max_retries=0)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    primary, fallback, elastic = OpenAISim(), OpenAISim(), OpenAISim()
    for sim in (primary, fallback, elastic):
        await sim.start()
    config = gateway_config(primary.url, fallback.url, elastic.url)
    stack = config.stacks["s"]
    router = ReasonRouter(config, LiveRoles(RoleTable("s", dict(stack.roles), frozenset(stack.member_names))))
    app = FastAPI()
    auth = bearer_guard(TOKEN)
    app.include_router(build_tools_router(router, auth))
    app.include_router(build_gateway_router(router, auth))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="none", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Gateway(f"http://127.0.0.1:{port}", primary, fallback, elastic, router)
    finally:
        server.should_exit = True
        await serving
        await router.aclose()
        for sim in (primary, fallback, elastic):
            await sim.stop()


async def test_chat_completion_through_reason(gateway: Gateway) -> None:
    async with gateway.client() as client:
        reply = await client.chat.completions.create(
            model="reason", messages=[{"role": "user", "content": "Why?"}], max_tokens=16, temperature=0
        )
    assert reply.object == "chat.completion"
    assert reply.model == "reason"
    assert reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 8
    extra = reply.model_extra or {}
    assert extra["stackd"]["backend"] == "primary"
    assert [a["status"] for a in extra["stackd"]["attempts"]] == ["answered"]
    sent = gateway.primary.requests[-1].body
    assert isinstance(sent, dict) and sent["max_tokens"] == 16


async def test_streaming_has_openai_chunks_and_usage(gateway: Gateway) -> None:
    async with gateway.client() as client:
        stream = await client.chat.completions.create(
            model="reason:effort=9",
            messages=[{"role": "user", "content": "Why?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


@pytest.mark.parametrize("fault", [Fault.refuse, Fault.http500, Fault.hang, Fault.malformed_body])
async def test_streaming_failover_before_the_first_token_is_invisible(gateway: Gateway, fault: Fault) -> None:
    await gateway.primary.set_fault(fault)
    async with gateway.client() as client:
        stream = await client.chat.completions.create(
            model="reason", messages=[{"role": "user", "content": "Why?"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == ANSWER
    row = next(r for r in gateway.router.stats()["strategies"] if r["backend"] == "primary")
    assert sum(row["failures"].values()) == 1


async def test_a_stream_cut_after_the_first_token_ends_with_an_error_naming_the_backend(
    gateway: Gateway,
) -> None:
    await gateway.primary.set_fault(Fault.die_mid_stream)
    async with gateway.client() as client:
        stream = await client.chat.completions.create(
            model="reason", messages=[{"role": "user", "content": "Why?"}], stream=True
        )
        received: list[str] = []
        with pytest.raises(openai.APIError, match="backend 'primary' failed mid-stream"):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received)  # some text had reached the caller: no failover, an explicit error
    assert gateway.fallback.requests == []
    async with gateway.http() as http:
        raw = await http.post(
            "/v1/chat/completions",
            json={"model": "reason", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
    events = [line for line in raw.text.split("\n\n") if line]
    assert '"code":"stream_broken"' in events[-2]
    assert events[-1] == "data: [DONE]"


async def test_none_healthy_is_a_503_in_openai_error_shape_listing_each_reason(gateway: Gateway) -> None:
    await gateway.primary.set_fault(Fault.http500)
    await gateway.fallback.set_fault(Fault.refuse)
    async with gateway.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="reason", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "all_strategies_failed"
    assert [(a["backend"], a["status"], a["reason"].split(":")[0]) for a in error["attempts"]] == [
        ("primary", "failed", "http_5xx"),
        ("fallback", "failed", "refused"),
    ]


async def test_streaming_with_none_healthy_is_also_a_503(gateway: Gateway) -> None:
    await gateway.primary.set_fault(Fault.http500)
    await gateway.fallback.set_fault(Fault.http500)
    async with gateway.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="reason", messages=[{"role": "user", "content": "x"}], stream=True
            )
    assert caught.value.status_code == 503


async def test_models_lists_roles_presets_slices_and_reason(gateway: Gateway) -> None:
    async with gateway.client() as client:
        ids = [m.id async for m in client.models.list()]
    assert ids == [
        "orchestrator",
        "reasoning",
        "elastic",
        "elastic:6b",
        "elastic:9b",
        "elastic:12b",
        "reason",
    ]


@pytest.mark.parametrize(
    ("model", "backend"),
    [
        ("elastic:9b", "elastic-9b"),
        ("elastic", "elastic-12b"),
        ("reasoning", "primary"),
        ("orchestrator", "fallback"),
    ],
)
async def test_a_preset_or_role_as_model(gateway: Gateway, model: str, backend: str) -> None:
    async with gateway.client() as client:
        reply = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert (reply.model_extra or {})["stackd"]["backend"] == backend


async def test_unknown_model_and_bad_token_use_openai_errors(gateway: Gateway) -> None:
    async with gateway.client() as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    async with gateway.client(token="wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
    async with gateway.client() as client:
        with pytest.raises(openai.UnprocessableEntityError):
            await client.chat.completions.create(model="reason", messages=[])
