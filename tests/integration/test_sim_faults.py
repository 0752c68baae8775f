"""Every fault mode behaves as documented on every simulator, over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from stackd.sim import AnthropicSim, Fault, GeminiSim, OllamaSim, OpenAISim, SimControl, SimServer


@dataclass(frozen=True)
class Protocol:
    """How to make a streaming and a plain request of one simulator, and read its error body."""

    kind: str
    stream_path: str
    stream_body: dict[str, Any]
    plain_path: str
    plain_body: dict[str, Any]
    headers: dict[str, str]

    def error_message(self, body: dict[str, Any]) -> str:
        if self.kind == "ollama":
            return body["error"]
        if self.kind == "anthropic":
            assert body["type"] == "error"
            return body["error"]["message"]
        if self.kind == "gemini":
            assert body["error"]["code"] == 500 and body["error"]["status"] == "INTERNAL"
            return body["error"]["message"]
        assert set(body["error"]) == {"message", "type", "param", "code"}
        return body["error"]["message"]


_MESSAGES = [{"role": "user", "content": "hello there"}]
PROTOCOLS = {
    "openai": Protocol(
        "openai",
        "/v1/chat/completions",
        {"model": "m", "messages": _MESSAGES, "stream": True},
        "/v1/chat/completions",
        {"model": "m", "messages": _MESSAGES},
        {},
    ),
    "anthropic": Protocol(
        "anthropic",
        "/v1/messages",
        {"model": "c", "max_tokens": 9, "messages": _MESSAGES, "stream": True},
        "/v1/messages",
        {"model": "c", "max_tokens": 9, "messages": _MESSAGES},
        {"anthropic-version": "2023-06-01"},
    ),
    "gemini": Protocol(
        "gemini",
        "/v1beta/models/g:streamGenerateContent?alt=sse",
        {"contents": [{"parts": [{"text": "hi"}]}]},
        "/v1beta/models/g:generateContent",
        {"contents": [{"parts": [{"text": "hi"}]}]},
        {},
    ),
    "ollama": Protocol(
        "ollama",
        "/api/generate",
        {"model": "llama3.2:3b", "prompt": "hi"},
        "/api/generate",
        {"model": "llama3.2:3b", "prompt": "hi", "stream": False},
        {},
    ),
}


def _make(kind: str, control: SimControl) -> SimServer:
    if kind == "ollama":
        return OllamaSim(control=control, pulled={"llama3.2:3b": 1_000_000})
    return {"openai": OpenAISim, "anthropic": AnthropicSim, "gemini": GeminiSim}[kind](control=control)


@pytest.fixture(params=sorted(PROTOCOLS))
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SimServer, Protocol]]:
    control = SimControl(first_token_delay_ms=300, hang_s=30)
    async with _make(request.param, control) as server:
        yield server, PROTOCOLS[request.param]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


def _events(raw: bytes) -> list[bytes]:
    """Data payloads of an SSE body, or the lines of an NDJSON body."""
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    if any(line.startswith(b"data:") for line in lines):
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]
    return lines


async def test_no_fault_streams_parseable_events(sim: tuple[SimServer, Protocol], session) -> None:
    server, proto = sim
    async with session.post(
        server.url + proto.stream_path, json=proto.stream_body, headers=proto.headers
    ) as r:
        assert r.status == 200
        events = _events(await r.read())
    assert len(events) >= server.control.tokens
    for event in events:
        if event != b"[DONE]":
            json.loads(event)


async def test_http500_answers_the_protocols_error_body(sim: tuple[SimServer, Protocol], session) -> None:
    server, proto = sim
    await server.set_fault(Fault.http500)
    async with session.post(server.url + proto.plain_path, json=proto.plain_body, headers=proto.headers) as r:
        assert r.status == 500
        assert "http500" in proto.error_message(await r.json())


async def test_die_mid_stream_cuts_the_connection_after_a_few_chunks(sim, session) -> None:
    server, proto = sim
    await server.set_fault(Fault.die_mid_stream)
    received = b""
    async with session.post(
        server.url + proto.stream_path, json=proto.stream_body, headers=proto.headers
    ) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                received += chunk
    assert 1 <= len(_events(received)) <= server.control.cut_after_chunks
    assert b"[DONE]" not in received and b"message_stop" not in received and b'"done":true' not in received


async def test_die_mid_stream_truncates_a_plain_body(sim, session) -> None:
    server, proto = sim
    await server.set_fault(Fault.die_mid_stream)
    async with session.post(server.url + proto.plain_path, json=proto.plain_body, headers=proto.headers) as r:
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


async def test_malformed_body_is_200_with_unparseable_json(sim, session) -> None:
    server, proto = sim
    await server.set_fault(Fault.malformed_body)
    async with session.post(server.url + proto.plain_path, json=proto.plain_body, headers=proto.headers) as r:
        assert r.status == 200
        with pytest.raises(ValueError):
            json.loads(await r.read())
    async with session.post(
        server.url + proto.stream_path, json=proto.stream_body, headers=proto.headers
    ) as r:
        events = _events(await r.read())
    bad = []
    for event in events:
        try:
            json.loads(event) if event != b"[DONE]" else None
        except ValueError:
            bad.append(event)
    assert len(bad) == 1 and bad[0] == events[1]


async def test_slow_first_token_delays_the_first_chunk_not_the_headers(sim, session) -> None:
    server, proto = sim
    await server.set_fault(Fault.slow_first_token)
    started = time.monotonic()
    async with session.post(
        server.url + proto.stream_path, json=proto.stream_body, headers=proto.headers
    ) as r:
        headers_after = time.monotonic() - started
        await r.content.readany()
        first_chunk_after = time.monotonic() - started
        await r.read()
    assert headers_after < 0.25
    assert first_chunk_after >= 0.29


async def test_hang_never_answers_and_shutdown_is_prompt(sim, session) -> None:
    server, proto = sim
    await server.set_fault(Fault.hang)
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            server.url + proto.plain_path,
            json=proto.plain_body,
            headers=proto.headers,
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 2


async def test_refuse_closes_the_port_and_clearing_reopens_the_same_port(sim, session) -> None:
    server, proto = sim
    port = server.port
    await server.set_fault(Fault.refuse)
    with pytest.raises(aiohttp.ClientConnectorError):
        async with session.post(server.url + proto.plain_path, json=proto.plain_body, headers=proto.headers):
            pass
    await server.set_fault(Fault.none)
    assert server.port == port
    async with session.post(server.url + proto.plain_path, json=proto.plain_body, headers=proto.headers) as r:
        assert r.status == 200


async def test_latency_delays_every_answer(sim, session) -> None:
    server, proto = sim
    server.control.latency_ms = 150
    started = time.monotonic()
    async with session.post(server.url + proto.plain_path, json=proto.plain_body, headers=proto.headers) as r:
        assert r.status == 200
    assert time.monotonic() - started >= 0.14
