"""The data path's HTTP client against real sockets: kept-alive connections and when they are not
reused, bodies by length, chunks and close, back-pressure, TLS verified, connect failures.

The servers are raw asyncio servers that count their connections and answer with exact bytes;
what each failure becomes as a ``FailureKind`` is tests/integration/test_router_wire_errors.py's.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trustme

from stackd.router import http_client
from stackd.router.http_client import (
    BadHeader,
    ConnectFailed,
    ConnectTimedOut,
    Disconnected,
    HttpClient,
    InvalidUrl,
)

Reply = Callable[[bytes], bytes]  # the request's bytes -> the answer's


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


class Upstream:
    """Reads requests (head and Content-Length body) and answers each with ``reply(request)``;
    ``close_after`` answers closes the connection."""

    def __init__(
        self, reply: Reply, close_after: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.reply = reply
        self.close_after = close_after
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = (
            f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else '127.0.0.1'}:{port}/v1/x"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                writer.write(self.reply(request))
                await writer.drain()
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    made = HttpClient(connect_s=2)
    yield made
    await made.close()


async def post(client: HttpClient, url: str, body: bytes = b"{}", **headers: str) -> tuple[int, bytes, Any]:
    async with client.post(url, body, headers) as answer:
        return answer.status, await answer.read(), answer.headers


async def test_a_kept_alive_connection_carries_the_next_call_and_the_request_is_http(
    client: HttpClient,
) -> None:
    async with Upstream(lambda request: ok(b'{"n": 1}')) as upstream:
        for _ in range(3):
            assert await post(client, upstream.url, b'{"q": 1}', Authorization="Bearer k") == (
                200,
                b'{"n": 1}',
                {"content-length": "8"},
            )
    assert upstream.connections == 1
    head, _, body = upstream.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x HTTP/1.1"
    assert f"Host: 127.0.0.1:{upstream.url.split(':')[2].split('/')[0]}".encode() in lines
    assert b"Authorization: Bearer k" in lines and b"Content-Length: 8" in lines
    assert any(line.startswith(b"User-Agent: stackd/") for line in lines)
    assert body == b'{"q": 1}'


async def test_an_answer_left_unread_closes_its_connection(client: HttpClient) -> None:
    size = 8 * 1024 * 1024  # more than arrives before the block ends: the socket is paused
    async with Upstream(lambda request: ok(b"x" * size)) as upstream:
        async with client.post(upstream.url, b"{}", {}) as answer:
            assert answer.status == 200  # the body is not read
        assert (await post(client, upstream.url))[:2] == (200, b"x" * size)
    assert upstream.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused(client: HttpClient) -> None:
    async with Upstream(lambda request: ok(b"{}"), close_after=1) as upstream:
        for _ in range(3):
            assert (await post(client, upstream.url))[:2] == (200, b"{}")
            await asyncio.sleep(0.05)  # the server's close reaches the client
    assert upstream.connections == 3


async def test_connection_close_and_idle_expiry_end_reuse(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Upstream(lambda request: ok(b"{}", b"Connection: close\r\n")) as upstream:
        await post(client, upstream.url)
        await post(client, upstream.url)
    assert upstream.connections == 2
    monkeypatch.setattr(http_client, "IDLE_S", 0.01)
    async with Upstream(lambda request: ok(b"{}")) as upstream:
        await post(client, upstream.url)
        await asyncio.sleep(0.05)
        await post(client, upstream.url)
    assert upstream.connections == 2


async def test_chunked_and_until_close_bodies_are_read_whole(client: HttpClient) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    async with Upstream(lambda request: chunked) as upstream, client.post(upstream.url, b"{}", {}) as answer:
        assert [piece async for piece in answer.chunks()] in ([b"abcd", b"efg"], [b"abcdefg"])
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe whole body"
    async with Upstream(lambda request: until_close, close_after=1) as upstream:
        assert (await post(client, upstream.url))[:2] == (200, b"the whole body")


async def test_a_body_cut_short_is_a_disconnect(client: HttpClient) -> None:
    async with (
        Upstream(
            lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", close_after=1
        ) as upstream,
        client.post(upstream.url, b"{}", {}) as answer,
    ):
        with pytest.raises(Disconnected):
            await answer.read()


async def test_a_slow_reader_pauses_the_socket_instead_of_buffering_the_answer(client: HttpClient) -> None:
    size = 8 * 1024 * 1024
    async with (
        Upstream(lambda request: ok(b"y" * size)) as upstream,
        client.post(upstream.url, b"{}", {}) as answer,
    ):
        await asyncio.sleep(0.3)  # the server has written all it could: the client stopped reading
        assert answer._buffered <= http_client.PAUSE_ABOVE + 256 * 1024
        received = 0
        while chunk := await answer.read_some(64 * 1024):
            received += len(chunk)
        assert received == size


async def test_tls_is_verified_against_the_trusted_certificates() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with Upstream(lambda request: ok(b'{"tls": true}'), tls=server_tls) as upstream:
        good = HttpClient(connect_s=2, tls=trusting)
        assert (await post(good, upstream.url))[:2] == (200, b'{"tls": true}')
        await good.close()
        system = HttpClient(connect_s=2)  # the system's certificates do not know this CA
        with pytest.raises(ConnectFailed, match="certificate verify failed"):
            await post(system, upstream.url)
        await system.close()


async def test_what_cannot_be_sent_or_reached_fails_before_a_byte_is_sent(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Upstream(lambda request: ok(b"{}")) as upstream:
        with pytest.raises(BadHeader):
            await post(client, upstream.url, Authorization="Bearer k\r\nX-Injected: 1")
        with pytest.raises(BadHeader):
            await post(client, upstream.url, Authorization="Bearer ключ")
        assert upstream.requests == []
    for url in ("not a url", "ftp://127.0.0.1/v1", "http://127.0.0.1:99999/v1"):
        with pytest.raises(InvalidUrl):
            await post(client, url)
    with pytest.raises(ConnectFailed):
        await post(client, upstream.url)  # nothing listens there any more

    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(10)

    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", never)
    slow = HttpClient(connect_s=0.1)
    with pytest.raises(ConnectTimedOut):
        await post(slow, "http://127.0.0.1:9/v1")


def test_the_client_runs_on_uvloop_as_the_daemon_does() -> None:
    """The daemon's loop is uvloop's, whose transports are not ``asyncio.Transport`` subclasses."""
    import uvloop

    async def calls() -> tuple[int, list[tuple[int, bytes]]]:
        client = HttpClient(connect_s=2)
        async with Upstream(lambda request: ok(b'{"loop": "uv"}')) as upstream:
            answers = [(await post(client, upstream.url))[:2] for _ in range(3)]
        await client.close()
        return upstream.connections, answers

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        connections, answers = runner.run(calls())
    assert answers == [(200, b'{"loop": "uv"}')] * 3 and connections == 1


async def test_a_connection_paused_under_a_whole_unread_answer_is_reused_reading(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer over the pause mark that arrived whole and was left unread: the connection goes
    back to the pool readable, and the next call on it is answered (not left on a paused socket)."""
    monkeypatch.setattr(http_client, "PAUSE_ABOVE", 1000)  # one read of the answer crosses it
    monkeypatch.setattr(http_client, "RESUME_BELOW", 500)
    async with Upstream(lambda request: ok(b"z" * 20_000)) as upstream:
        async with client.post(upstream.url, b"{}", {}) as answer:
            for _ in range(500):
                if answer.complete:
                    break
                await asyncio.sleep(0.01)
            assert answer.complete and answer._connection._paused  # whole, paused, unread
        async with asyncio.timeout(5):
            assert (await post(client, upstream.url))[:2] == (200, b"z" * 20_000)
    assert upstream.connections == 1
