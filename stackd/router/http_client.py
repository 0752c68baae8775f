"""The data path's HTTP/1.1 client: pooled keep-alive connections read by httptools' parser.

aiohttp's client cost 94 µs of CPU per call at 16 concurrent calls and 189 µs at one; this client
35 and 62 µs, side by side on one simulator (``bench/http_client.py``, docs/benchmarks.md). It
does what the data path needs and nothing more: a POST with a body; an answer read whole or as it
comes, with back-pressure; connections kept alive per (scheme, host, port) and dropped after
``IDLE_S`` unused; TLS with the system's certificates; a connect time limit. Like the aiohttp
session it replaces (``trust_env`` off, redirects off, a dummy cookie jar), it follows no
redirect (a key goes only to its endpoint), keeps no cookie and uses no proxy; it asks for no
compression, so an answer comes as the engine wrote it.

Every failure is an ``HttpFailure`` whose class says what happened (``stackd.router.backends.base``
turns each into its ``FailureKind``): ``ConnectFailed`` (refused, DNS, TLS), ``ConnectTimedOut``,
``Disconnected`` (the connection closed before the answer ended), ``BadAnswer`` (not HTTP as
httptools reads it, a header line over ``MAX_HEADER_BYTES`` or a head over ``MAX_HEAD_BYTES``, a
``Content-Encoding`` nobody asked for), ``InvalidUrl`` and ``BadHeader`` (nothing
was sent). A POST is never sent twice: a kept-alive connection that the server closes as the
request leaves is ``Disconnected`` before the head, as it was with aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

import httptools

from stackd import __version__

MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers
MAX_HEADER_BYTES = 8190  # one header line, as aiohttp and most servers bound it
IDLE_S = 15.0  # a connection unused longer is closed rather than reused (servers close theirs)
MAX_IDLE_PER_HOST = 256
PAUSE_ABOVE = 1024 * 1024  # unread answer bytes: the socket is not read past this ...
RESUME_BELOW = 256 * 1024  # ... until the reader is back under this
USER_AGENT = f"stackd/{__version__}"


class HttpFailure(Exception):
    """A call that did not become a whole answer; the message names no secret (no header)."""


class InvalidUrl(HttpFailure):
    pass


class BadHeader(HttpFailure):
    pass


class ConnectFailed(HttpFailure):
    pass


class ConnectTimedOut(HttpFailure):
    pass


class Disconnected(HttpFailure):
    pass


class BadAnswer(HttpFailure):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go, and the start of their head (parsed once per URL)."""

    key: tuple[str, str, int]  # scheme, host, port: one pool each
    host: str
    port: int
    tls: bool
    head: bytes  # b"POST /path HTTP/1.1\r\nHost: ...\r\nUser-Agent: ...\r\n"


@lru_cache(maxsize=512)
def target_of(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number
        raise InvalidUrl(str(exc)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidUrl(f"not an http(s) URL: {url}")
    tls = parts.scheme == "https"
    port = port or (443 if tls else 80)
    host = parts.hostname
    authority = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        authority = f"{authority}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {USER_AGENT}\r\n"
    try:
        encoded = head.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidUrl(f"a URL with characters HTTP cannot carry: {url}") from None
    return Target((parts.scheme, host, port), host, port, tls, encoded)


def request_bytes(target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [target.head]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or ":" in name or "\r" in value or "\n" in value:
            raise BadHeader(f"header {name!r} holds a line break or a colon in its name")
        try:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        except UnicodeEncodeError:
            raise BadHeader(f"header {name!r} holds a character HTTP cannot carry") from None
    lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)


class HttpAnswer:
    """One answer: its head once ``post`` yields it, its body as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}  # names in lower case
        self.content_length: int | None = None
        self.keep_alive = False
        self._head_bytes = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self.complete = False  # the whole body arrived
        self.headed = False
        self._error: HttpFailure | None = None
        self._waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ what the reader calls
    async def head(self) -> None:
        while not self.headed:
            await self._wait()

    async def read(self) -> bytes:
        """The rest of the body."""
        if self.complete and len(self._chunks) == 1:  # the usual answer: one piece, arrived
            chunk = self._chunks.popleft()
            self._buffered = 0
            return chunk
        return b"".join([chunk async for chunk in self.chunks()])

    async def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body as soon as there are any; b"" at its end."""
        while not self._chunks and not self.complete:
            await self._wait()
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        if len(chunk) > limit:
            chunk, rest = chunk[:limit], chunk[limit:]
            self._chunks.appendleft(rest)
        self._take(len(chunk))
        return chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._take(len(chunk))
                yield chunk
            if self.complete:
                return
            await self._wait()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._chunks:
            raise self._error

    def _take(self, n: int) -> None:
        self._buffered -= n
        if self._buffered < RESUME_BELOW:
            self._connection.resume()

    # ------------------------------------------------------------ what the connection calls
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4
        if size > MAX_HEADER_BYTES:
            raise BadAnswer(f"a header line over {MAX_HEADER_BYTES} bytes")
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise BadAnswer(f"an answer's head over {MAX_HEAD_BYTES // 1024} KiB")
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self, status: int, keep_alive: bool) -> None:
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":  # never asked for (no Accept-Encoding): not readable as sent
            raise BadAnswer(f"an answer encoded as {encoding!r}, which stackd did not ask for")
        self.status = status
        self.keep_alive = keep_alive
        length = self.headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.headed = True
        self._wake()

    def on_body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > PAUSE_ABOVE:
            self._connection.pause()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: HttpFailure) -> None:
        if self._error is None and not self.complete:
            self._error = error
            self._wake()

    def ends_at_close(self) -> bool:
        """A head without a length or chunked encoding: the body ends when the connection does."""
        return (
            self.headed
            and self.content_length is None
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        )


class _Connection(asyncio.Protocol):
    """One kept-alive connection, answering one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.answer: HttpAnswer | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass

    def send(self, request: bytes) -> HttpAnswer:
        assert self.transport is not None
        answer = self.answer = HttpAnswer(self)
        self.transport.write(request)
        return answer

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # bytes nobody asked for: the connection is not reusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except HttpFailure as exc:
            self._broken(exc)
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, HttpFailure) else None
            self._broken(cause or BadAnswer(f"not an HTTP/1.1 answer ({exc})"))

    def _broken(self, error: HttpFailure) -> None:
        if self.answer is not None:
            self.answer.fail(error)
        self.close()

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.answer is not None
        self.answer.on_header(name, value)

    def on_headers_complete(self) -> None:
        assert self.answer is not None
        self.answer.on_headers_complete(self._parser.get_status_code(), self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        assert self.answer is not None
        self.answer.on_body(body)

    def on_message_complete(self) -> None:
        assert self.answer is not None
        self.answer.on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is None or answer.complete:
            return
        if exc is None and answer.ends_at_close():
            answer.on_message_complete()
            return
        reason = f": {exc}" if exc is not None else ""
        answer.fail(Disconnected(f"the connection closed before the answer ended{reason}"))

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Exchange:
    """One request and its answer (an async context manager, not a generator: this runs on every
    call). The connection goes back to the pool only when the answer was read to its end, the
    server keeps it alive and nothing failed; otherwise it is closed."""

    __slots__ = ("_answer", "_client", "_connection", "_request", "_target")

    def __init__(self, client: HttpClient, target: Target, request: bytes) -> None:
        self._client = client
        self._target = target
        self._request = request
        self._connection: _Connection | None = None
        self._answer: HttpAnswer | None = None

    async def __aenter__(self) -> HttpAnswer:
        client = self._client
        connection = self._connection = client._take(self._target) or await client._connect(self._target)
        answer = self._answer = connection.send(self._request)
        try:
            await answer.head()
        except BaseException:
            connection.answer = None
            connection.close()
            raise
        return answer

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        connection, answer = self._connection, self._answer
        assert connection is not None and answer is not None
        connection.answer = None
        if kind is None and answer.complete and answer.keep_alive and not connection.closed:
            connection.resume()  # a body that arrived whole while unread may have paused it
            self._client._put(self._target, connection)
        else:
            connection.close()


class HttpClient:
    """A pool of kept-alive connections per (scheme, host, port). Made and used in one event loop."""

    def __init__(self, connect_s: float, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: how https endpoints are verified (the system's certificates when None)."""
        self.connect_s = connect_s
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls = tls
        self.closed = False

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Exchange:
        """POST ``body``: ``async with client.post(...) as answer`` has the answer once its head
        arrived. An URL or a header that cannot be sent raises here, before any I/O."""
        target = target_of(url)
        return Exchange(self, target, request_bytes(target, body, headers))

    def _take(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target.key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            transport = connection.transport
            fresh = now - connection.idle_since < IDLE_S
            if fresh and not connection.closed and transport is not None and not transport.is_closing():
                return connection
            connection.close()
        return None

    def _put(self, target: Target, connection: _Connection) -> None:
        if self.closed:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle = self._idle.setdefault(target.key, [])
        if len(idle) < MAX_IDLE_PER_HOST:
            idle.append(connection)
        else:
            connection.close()

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if target.tls else None
        try:
            async with asyncio.timeout(self.connect_s):
                _, connection = await loop.create_connection(
                    _Connection,
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
        except TimeoutError:
            raise ConnectTimedOut(f"connect timed out after {self.connect_s:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror), TLS (ssl.SSLError)
            raise ConnectFailed(exc.strerror or str(exc) or type(exc).__name__) from None
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def close(self) -> None:
        """Close the idle connections; those in use close when their answer ends."""
        self.closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
