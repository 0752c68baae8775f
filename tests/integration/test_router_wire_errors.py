"""Real bytes on a real socket: what a broken upstream sends becomes a classified failure, and the
chain moves on to a healthy OpenAI simulator.

The broken upstream is a raw TCP server that reads one request and answers with exactly the
bytes of a case (a bad status line, an 8 KiB header, a broken chunked body, invalid UTF-8, an
endless stream line, a redirect …); endpoints the client cannot even use (not a URL, port 99999, a
key with a newline) fail before any byte is sent; the config refuses such endpoints at load, so
they arrive here as live endpoints (where a process member's port is published). tests/unit/test_router_errors.py covers each
exception family with a stand-in client; this file shows that the real client raises them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from stackd.config.models import StacksConfig
from stackd.roles import LiveEndpoints, LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.types import FailureKind, StreamDone
from tests.unit.test_router_errors import REQUEST

KEY_ENV = "TEST_WIRE_KEY"
SSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"


class RawUpstream:
    """Answers every request with ``reply`` (raw bytes), then closes; counts the requests."""

    def __init__(self) -> None:
        self.reply = b""
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.reply)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class World:
    upstream: RawUpstream
    backup_url: str

    def router(self, endpoint: str, api: str = "openai", live: bool = False) -> ReasonRouter:
        """A router whose first strategy calls ``endpoint``: configured, or (``live``) set where a
        process member's port is published, which no config check sees."""
        config = StacksConfig.model_validate(
            {
                "default_stack": "s",
                "roles": {"orchestrator": {"required": True}},
                "models": {
                    "broken": {
                        "runtime": "remote",
                        "placement": "cloud",
                        "api": api,
                        "endpoint": "http://127.0.0.1:9/v1" if live else endpoint,
                        "remote": {"api_key_env": KEY_ENV},
                    },
                    "backup": {
                        "runtime": "docker",
                        "placement": "gpu",
                        "api": "openai",
                        "endpoint": f"{self.backup_url}/v1",
                        "docker": {"container": "backup"},
                    },
                },
                "stacks": {"s": {"roles": {"orchestrator": "backup"}, "members": ["broken"]}},
                "reason": {
                    "strategies": {"first": {"models": ["broken"]}, "second": {"role": "orchestrator"}},
                    "default_chain": ["first", "second"],
                    "timeouts": {"connect_s": 1, "first_token_s": 3, "total_s": 5},
                },
            }
        )
        stack = config.stacks["s"]
        endpoints = LiveEndpoints()
        if live:
            endpoints.set("broken", endpoint)
        table = RoleTable("s", dict(stack.roles), frozenset(stack.member_names))
        return ReasonRouter(config, LiveRoles(table), endpoints=endpoints)


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    from stackd.sim.openai import OpenAISim

    monkeypatch.setenv(KEY_ENV, "sk-wire-canary-1")
    upstream = RawUpstream()
    await upstream.start()
    async with OpenAISim() as backup:
        yield World(upstream, backup.url)
    await upstream.stop()


async def first_attempt(router: ReasonRouter, streaming: bool) -> Any:
    """The broken backend's attempt, after checking that the backup answered."""
    try:
        if streaming:
            items = [item async for item in router.stream(router.reason_route(), REQUEST)]
            assert isinstance(items[-1], StreamDone), items[-1]
            answer = items[-1].answer
        else:
            answer = await router.reason(REQUEST)
    finally:
        await router.aclose()
    assert answer.backend == "backup", answer.attempts
    attempt = answer.attempts[0]
    assert attempt.status == "failed" and attempt.backend == "broken", attempt
    assert router.circuit("broken").last_failure == attempt.reason
    return attempt


REPLIES: dict[str, tuple[bytes, FailureKind, bool | None]] = {
    # name: (the upstream's bytes, the kind, only for plain (False) or streamed (True) calls)
    "a bad status line": (b"garbage\r\n\r\n", FailureKind.malformed, None),
    "a header over 8 KiB": (
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        FailureKind.malformed,
        None,
    ),
    "a broken chunked body": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        FailureKind.malformed,
        None,
    ),
    "a body shorter than its Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
        FailureKind.stream_cut,
        None,
    ),
    "a Content-Encoding never asked for": (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd",
        FailureKind.malformed,
        None,
    ),
    "invalid UTF-8 in the JSON": (
        b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"choices": "\xff"}',
        FailureKind.malformed,
        False,
    ),
    "a stream chunk of invalid UTF-8": (SSE + b'data: {"choices": "\xff"}\n\n', FailureKind.malformed, True),
    "a stream line over 1 MiB": (SSE + b"data: " + b"a" * (1024 * 1024 + 100), FailureKind.malformed, True),
    "a stream that closes before [DONE]": (SSE + b'data: {"choices": []}\n\n', FailureKind.stream_cut, True),
    "a 307 redirect (never followed)": (
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.invalid/\r\nContent-Length: 0\r\n\r\n",
        FailureKind.malformed,
        None,
    ),
    "a 401 with a huge body": (
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 100000\r\n\r\n" + b"n" * 100_000,
        FailureKind.http_4xx,
        None,
    ),
}


@pytest.mark.parametrize(
    ("case", "streaming"),
    [
        (case, mode)
        for case, (_, _, only) in REPLIES.items()
        for mode in (False, True)
        if only in (None, mode)
    ],
    ids=lambda v: ("stream" if v else "plain") if isinstance(v, bool) else v,
)
async def test_a_broken_answer_on_the_wire_is_classified_and_the_backup_answers(
    world: World, case: str, streaming: bool
) -> None:
    reply, kind, _ = REPLIES[case]
    world.upstream.reply = reply
    attempt = await first_attempt(world.router(f"{world.upstream.url}/v1"), streaming)
    assert attempt.kind is kind, attempt.reason
    assert len(world.upstream.requests) == 1  # sent once, no retry, no redirect followed
    assert len(attempt.reason) < 700


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("endpoint", "api"),
    [
        ("not a url at all", "openai"),
        ("http://127.0.0.1:99999/v1", "gemini"),
        ("ftp://127.0.0.1/v1", "anthropic"),
    ],
)
async def test_an_endpoint_that_is_not_an_http_url_is_refused_and_the_backup_answers(
    world: World, endpoint: str, api: str, streaming: bool
) -> None:
    attempt = await first_attempt(world.router(endpoint, api, live=True), streaming)
    assert attempt.kind is FailureKind.refused
    assert "is not a valid http(s) URL" in attempt.reason


async def test_a_key_with_a_newline_is_refused_before_it_is_sent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wire-canary-1\nX-Injected: 1")
    world.upstream.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    attempt = await first_attempt(world.router(f"{world.upstream.url}/v1"), streaming=False)
    assert attempt.kind is FailureKind.refused
    assert "cannot send a request" in attempt.reason and "sk-wire-canary-1" not in attempt.reason
    assert all(b"X-Injected" not in r for r in world.upstream.requests)


async def test_url_credentials_reach_the_upstream_as_basic_auth_beside_the_protocols_key(
    world: World,
) -> None:
    world.upstream.reply = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\ndown"
    host = world.upstream.url.removeprefix("http://")
    attempt = await first_attempt(world.router(f"http://proxy:s3cr%2Ft@{host}", "anthropic"), streaming=False)
    sent = world.upstream.requests[0].decode()
    assert "Authorization: Basic cHJveHk6czNjci90\r\n" in sent  # proxy:s3cr/t
    assert "x-api-key: sk-wire-canary-1\r\n" in sent
    assert attempt.reason == f"http_5xx: HTTP 500 from {world.upstream.url}/v1/messages: down"
