"""The Anthropic simulator speaks the Messages API: headers, SSE event order, error shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from stackd.sim import AnthropicSim

pytest_plugins = ["tests.sim_fixtures"]

HEADERS = {"x-api-key": "ak-test", "anthropic-version": "2023-06-01"}
BODY = {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "one two three"}]}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


def _sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        events.append((name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))))
    return events


async def test_message_reply_carries_text_and_usage(anthropic_sim: AnthropicSim, session) -> None:
    async with session.post(anthropic_sim.url + "/v1/messages", json=BODY, headers=HEADERS) as response:
        message = await response.json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": anthropic_sim.control.answer}]
    assert message["usage"] == {"input_tokens": 3, "output_tokens": anthropic_sim.control.tokens}
    assert message["stop_reason"] == "end_turn"


async def test_stream_follows_the_documented_event_order(anthropic_sim: AnthropicSim, session) -> None:
    anthropic_sim.control.tokens = 3
    async with session.post(
        anthropic_sim.url + "/v1/messages", json={**BODY, "stream": True}, headers=HEADERS
    ) as response:
        events = _sse((await response.read()).decode())
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == anthropic_sim.control.answer
    assert events[-2][1]["usage"]["output_tokens"] == 3


async def test_wrong_key_is_an_authentication_error(anthropic_sim: AnthropicSim, session) -> None:
    anthropic_sim.control.require_api_key = "ak-right"
    async with session.get(anthropic_sim.url + "/v1/models", headers=HEADERS) as response:
        assert response.status == 401
        body = await response.json()
    assert body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    assert anthropic_sim.requests[-1].headers["x-api-key"] == "<redacted>"


async def test_version_header_is_required(anthropic_sim: AnthropicSim, session) -> None:
    async with session.post(
        anthropic_sim.url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_model_list(anthropic_sim: AnthropicSim, session) -> None:
    async with session.get(anthropic_sim.url + "/v1/models", headers=HEADERS) as response:
        body = await response.json()
    assert [m["id"] for m in body["data"]] == ["claude-sim-1"]
    assert body["has_more"] is False
