"""The base of every simulator: an aiohttp app on a real loopback port, with faults injected live.

A protocol simulator subclasses ``SimServer`` and supplies its routes, its error body and where
its API key travels. The base owns what is common: listening and refusing (``Fault.refuse``
closes the listening socket and reopens it on the same port), recording requests, latency,
hang, 500, authentication, and the helpers ``send_body`` / ``open_stream`` through which
handlers emit bytes so that slow-first-token, cut and malformed faults apply uniformly.

Usage::

    async with OpenAISim(control=SimControl(latency_ms=5)) as sim:
        ... sim.url ...
        await sim.set_fault(Fault.die_mid_stream)

or, from synchronous code, ``handle = OpenAISim.start_in_thread()`` and ``handle.stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web

from stackd.sim.control import Fault, RecordedRequest, SimControl, echo_of, redact_headers
from stackd.sim.thread import SimThread

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_BODY_KEY = web.RequestKey("sim_body", object)


class StreamCut(Exception):
    """Raised by ``SimStream.send`` when ``die_mid_stream`` says the connection dies now."""


class SimStream:
    """A started streaming response; ``send`` writes one chunk, applying the stream faults."""

    def __init__(
        self, server: SimServer, response: web.StreamResponse, garbage: bytes, echo: bytes = b""
    ) -> None:
        self._server = server
        self._response = response
        self._garbage = garbage
        self._echo = echo  # the error event of echo_key_error_event, the bad chunk of echo_key_malformed
        self._sent = 0

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    async def send(self, chunk: bytes) -> None:
        control = self._server.control
        if self._sent == 0 and control.fault is Fault.slow_first_token:
            await asyncio.sleep(control.first_token_delay_ms / 1000)
        elif self._sent and control.chunk_interval_ms:
            await asyncio.sleep(control.chunk_interval_ms / 1000)
        if control.fault is Fault.die_mid_stream and self._sent >= control.cut_after_chunks:
            raise StreamCut
        if control.fault is Fault.echo_key_error_event:
            await self._response.write(self._echo)  # an error event ends the stream
            raise StreamCut
        await self._response.write(chunk)
        self._sent += 1
        if control.fault is Fault.malformed_body and self._sent == 1:
            await self._response.write(self._garbage)
        elif control.fault is Fault.echo_key_malformed and self._sent == 1:
            await self._response.write(self._echo)

    async def send_all(self, chunks: list[bytes]) -> None:
        """Send ``chunks`` in order; with no fault and no pause they go out in one write (hot path)."""
        control = self._server.control
        if control.fault is Fault.none and not control.chunk_interval_ms:
            await self._response.write(b"".join(chunks))
            self._sent += len(chunks)
            return
        for chunk in chunks:
            await self.send(chunk)


class SimServer:
    """An async context manager serving one protocol on ``host:port`` (port 0 picks a free one).

    ``url`` is ``http://host:port`` once started; ``control`` is read on every request;
    ``requests`` lists what was received (not ``/_sim/*``) when ``record`` is true.
    """

    kind: ClassVar[str] = "base"
    stream_garbage: ClassVar[bytes] = b'{"truncated": \n'
    sse_error_event: ClassVar[bytes | None] = None  # the SSE ``event:`` name of an error, if any

    default_models: tuple[str, ...] = ()

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        control: SimControl | None = None,
        *,
        models: Sequence[str] | None = None,
        record: bool = True,
    ) -> None:
        self.models = list(models if models is not None else self.default_models)
        self._serial = 0
        self.host = host
        self.port = port
        self.control = control if control is not None else SimControl()
        self.record = record
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._closing: asyncio.Event | None = None
        self._revert: asyncio.TimerHandle | None = None
        self._admin_tasks: set[asyncio.Task[None]] = set()

    # --- what a protocol supplies -------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the protocol's routes."""
        raise NotImplementedError

    def error(self, status: int, message: str) -> web.Response:
        """An error response in the protocol's shape."""
        raise NotImplementedError

    def presented_key(self, request: web.Request) -> str | None:
        """The API key the request carries, where this protocol puts it."""
        auth = request.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def auth_failure(self, request: web.Request) -> web.Response:
        """The answer to a missing or wrong key (never echoes the key)."""
        return self.error(401, "Invalid authentication credentials.")

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def next_serial(self) -> int:
        """1, 2, 3 … per server: ids of responses (msg_sim00000001 …)."""
        self._serial += 1
        return self._serial

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._faults], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_sim/fault", self._admin_fault)
        app.router.add_get("/_sim/state", self._admin_state)
        self.add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await self._listen()
        if self.control.fault is Fault.refuse:
            await self._stop_listening()

    async def stop(self) -> None:
        if self._revert is not None:
            self._revert.cancel()
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def set_fault(self, fault: Fault | str) -> None:
        """Switch the fault mode; entering or leaving ``refuse`` closes or reopens the port."""
        fault = Fault(fault)
        self.control.fault = fault
        if fault is Fault.refuse and self._site is not None:
            await self._stop_listening()
        elif fault is not Fault.refuse and self._site is None and self._runner is not None:
            await self._listen()

    @classmethod
    def start_in_thread(cls, *args: Any, **kwargs: Any) -> SimThread:
        """Start ``cls(*args, **kwargs)`` on its own event loop in a daemon thread (sync tests)."""
        return SimThread(lambda: cls(*args, **kwargs))

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._site = site
        self.port = self._runner.addresses[-1][1]

    async def _stop_listening(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    # --- faults -------------------------------------------------------------------------

    @web.middleware
    async def _faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request[_BODY_KEY] = body
        if self.record:
            headers = redact_headers(request.headers)
            self.requests.append(RecordedRequest(request.method, request.path, body, headers))
        control = self.control
        if control.fault is Fault.refuse:  # a kept-alive connection opened before the port closed
            return self.cut(request, web.StreamResponse())
        if control.latency_ms:
            await asyncio.sleep(control.latency_ms / 1000)
        if control.fault is Fault.hang:
            await self.wait_closing(control.hang_s)
            return self.cut(request, web.StreamResponse())
        if control.fault is Fault.http500:
            return self.error(500, "The simulator was told to fail (fault http500).")
        if control.fault is Fault.echo_key_long_error:
            return self.long_echo_error(request)
        expected = control.require_api_key
        if expected is not None:
            presented = self.presented_key(request) or ""
            if not hmac.compare_digest(presented.encode(), expected.encode()):
                return self.auth_failure(request)
        try:
            return await handler(request)
        except StreamCut:
            return self.cut(request, web.StreamResponse())
        except ConnectionResetError:  # the client went away mid-answer (its timeout): not our error
            return self.cut(request, web.StreamResponse())

    @staticmethod
    def body_of(request: web.Request) -> object:
        """The request's JSON body as parsed once by the middleware (None if absent or invalid)."""
        return request.get(_BODY_KEY)

    @staticmethod
    def cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Close the connection after flushing what was written; the client sees a truncated answer."""
        transport = request.transport
        if transport is not None:
            transport.close()
        return response

    async def wait_closing(self, seconds: float) -> None:
        """Sleep ``seconds`` or until the server stops, whichever comes first."""
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    # --- echoes of the credentials (redaction tests) --------------------------------------

    def echo(self, request: web.Request) -> str:
        return echo_of(request.headers, self.presented_key(request))

    def long_echo_error(self, request: web.Request) -> web.Response:
        """A 500 in the protocol's shape, over 300 bytes, whose echoed key starts at byte 295."""
        echo = self.echo(request)
        key = self.presented_key(request) or request.headers.get("Authorization") or "-"
        probe = self.error(500, echo).body
        assert isinstance(probe, bytes)
        pad = "x" * max(0, 295 - probe.find(key.encode()))
        return self.error(500, f"{pad}{echo} (the upstream's log follows){'.' * 200}")

    def stream_error_bytes(self, message: str, content_type: str) -> bytes:
        """The protocol's error object framed as one event of a stream of ``content_type``."""
        body = self.error(500, message).body
        assert isinstance(body, bytes)
        if content_type != "text/event-stream":
            return body + b"\n"
        name = self.sse_error_event
        return (b"event: " + name + b"\n" if name else b"") + b"data: " + body + b"\n\n"

    async def send_body(
        self, request: web.Request, body: bytes, *, status: int = 200, content_type: str = "application/json"
    ) -> web.StreamResponse:
        """Answer with ``body`` whole, or slowly, cut in half, or truncated, as the fault says."""
        fault = self.control.fault
        if fault is Fault.slow_first_token:
            await asyncio.sleep(self.control.first_token_delay_ms / 1000)
        elif fault is Fault.malformed_body:
            return web.Response(body=body[: max(1, len(body) // 2)], status=status, content_type=content_type)
        elif fault is Fault.echo_key_malformed:
            echoed = (
                b'{"received": ' + json.dumps(self.echo(request)).encode() + b", " + body[1 : len(body) // 2]
            )
            return web.Response(body=echoed, status=status, content_type=content_type)
        elif fault is Fault.echo_key_error_event:
            error = self.error(500, self.echo(request))
            return web.Response(body=error.body, status=status, content_type=content_type)
        elif fault is Fault.die_mid_stream:
            response = web.StreamResponse(status=status)
            response.content_type = content_type
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            return self.cut(request, response)
        return web.Response(body=body, status=status, content_type=content_type)

    async def open_stream(self, request: web.Request, content_type: str) -> SimStream:
        """Send the headers of a streaming answer; chunks then go through ``SimStream.send``."""
        response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await response.prepare(request)
        echo = b""
        if self.control.fault is Fault.echo_key_error_event:
            echo = self.stream_error_bytes(self.echo(request), content_type)
        elif self.control.fault is Fault.echo_key_malformed:
            quoted = json.dumps(self.echo(request)).encode()
            echo = self.stream_garbage.replace(b"{", b'{"received": ' + quoted + b", ", 1)
        return SimStream(self, response, self.stream_garbage, echo)

    # --- admin (/_sim only; product code never calls it) ---------------------------------

    async def _admin_fault(self, request: web.Request) -> web.Response:
        """``{"fault": MODE, "duration_s": S?, ...SimControl fields}``; duration reverts to none."""
        try:
            changes = dict(await request.json())
            fault = Fault(changes.pop("fault", self.control.fault))
            duration = changes.pop("duration_s", None)
            self.control.update(changes)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad fault request: {exc}"}, status=400)
        if self._revert is not None:
            self._revert.cancel()
            self._revert = None
        loop = asyncio.get_running_loop()
        if duration is not None:
            self._revert = loop.call_later(float(duration), self._spawn, Fault.none)
        # Answer before the port closes so the caller learns that the change took effect.
        loop.call_soon(self._spawn, fault)
        return web.json_response({"fault": fault.value, "duration_s": duration})

    def _spawn(self, fault: Fault) -> None:
        task = asyncio.get_running_loop().create_task(self.set_fault(fault))
        self._admin_tasks.add(task)
        task.add_done_callback(self._admin_tasks.discard)

    async def _admin_state(self, request: web.Request) -> web.Response:
        control = self.control
        return web.json_response(
            {
                "kind": self.kind,
                "fault": control.fault.value,
                "latency_ms": control.latency_ms,
                "requests": len(self.requests),
            }
        )
