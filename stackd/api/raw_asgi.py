"""Raw ASGI plumbing for the hot POST routes (the gateway, ``/tools/*``, ``/mcp``'s validation).

FastAPI's per-request dependency and response machinery costs about 40% of the gateway's hot
path on 2 cores (research/physical-floor.md, docs/benchmarks.md), so these routes read the body,
validate it with pydantic straight from the bytes, and write bytes with ``send``. Every
``StackdError`` a handler raises becomes the error table's answer (``stackd.api.errors``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from stackd.api.auth import scope_guard
from stackd.api.errors import Shape, error_answer, invalid_request_message, problem
from stackd.errors import StackdError
from stackd.state.json_bytes import dumps as dumps  # re-exported: the raw routes write with it

Auth = Callable[[Request], object]  # the app's auth dependency: raises, or returns (an awaitable)
Handler = Callable[[Scope, bytes, Send], Awaitable[None]]  # (scope, the whole body, send)
Body = TypeVar("Body", bound=BaseModel)
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
SSE_DONE = b"data: [DONE]\n\n"
WATCH_AFTER_S = 0.05  # a caller that leaves sooner is noticed then; later, at once


class RequestRejected(StackdError):
    """A request body that fails validation (422)."""

    status = 422


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON_HEADERS
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_sse(send: Send, events: AsyncIterator[bytes]) -> None:
    """A 200 ``text/event-stream`` of already-framed events; the body ends when ``events`` does."""
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    async for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def sse(value: object) -> bytes:
    return b"data: " + dumps(value) + b"\n\n"


def validate(model: type[Body], body: bytes) -> Body:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        problems = [problem(err) for err in exc.errors()]
        raise RequestRejected(invalid_request_message(problems), problems=problems) from None


async def authorize(auth: Auth, scope: Scope, receive: Receive) -> None:
    """Run the app's auth dependency (a callable taking the Request; sync or async)."""
    result = auth(Request(scope, receive))
    if inspect.isawaitable(result):
        await result


class _Call:
    """One call in flight on a raw route: what its watcher reads, and whether its client left."""

    __slots__ = ("gone", "receive", "since", "watcher")

    def __init__(self, receive: Receive, since: float) -> None:
        self.receive = receive
        self.since = since
        self.watcher: asyncio.Task[None] | None = None
        self.gone = False


class DisconnectWatch:
    """Cancels the calls whose client went away, so that an engine stops generating for a caller
    that left (a disconnected SSE reader, a Ctrl-C in ``stackd reason``, a client's own timeout)
    instead of spending its single slot on an answer nobody reads: cancelling closes the
    backend's connection.

    Once a call's body has been read, the next ASGI message can only be ``http.disconnect``. A
    call still in flight ``after_s`` after it began gets a watcher task that waits for it and
    cancels the call's task. One sweep every ``after_s`` starts them, while calls are in flight:
    most gateway calls end sooner and cost a dict entry, not a timer, a task and three closures
    each (3.5 µs a call in a tight loop, ~7 µs of the daemon's CPU at 16 connections). A
    disconnect in between waits in uvicorn's queue, and the watcher reads it at once."""

    def __init__(self, after_s: float = WATCH_AFTER_S) -> None:
        self._after_s = after_s
        self._unwatched: dict[asyncio.Task[Any], _Call] = {}  # in the order they began
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_loop: asyncio.AbstractEventLoop | None = None

    async def run(self, handle: Handler, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """``handle(scope, body, send)`` in this task; when the client leaves first, cancel it."""
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        call = _Call(receive, loop.time())
        self._unwatched[task] = call
        if self._sweep is None or self._sweep_loop is not loop:  # none, or a closed loop's
            self._sweep, self._sweep_loop = loop.call_later(self._after_s, self._start_watchers, loop), loop
        try:
            await handle(scope, body, send)
        except asyncio.CancelledError:
            if not call.gone:
                raise
            task.uncancel()  # the cancellation was ours: the client left, nobody to answer
        finally:
            # Synchronously after ``handle``: a watcher about to run is cancelled before it can
            # cancel this task.
            self._unwatched.pop(task, None)
            if call.watcher is not None:
                call.watcher.cancel()

    def _start_watchers(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        due = loop.time() - self._after_s
        for task, call in list(self._unwatched.items()):
            if call.since > due:
                break  # the rest began later still
            del self._unwatched[task]
            call.watcher = loop.create_task(_cancel_when_gone(task, call))
        if self._unwatched:
            self._sweep = loop.call_later(self._after_s, self._start_watchers, loop)


async def _cancel_when_gone(task: asyncio.Task[Any], call: _Call) -> None:
    while (await call.receive())["type"] != "http.disconnect":
        pass
    call.gone = True
    task.cancel()


class RawEndpoint:
    """An ASGI app for one route: the body read whole, then ``handle(scope, body, send)`` does the
    work, cancelled if the client leaves first (``DisconnectWatch``); every ``StackdError``
    becomes the error table's answer in ``shape`` (``stackd.api.errors``)."""

    def __init__(self, auth: Auth, handle: Handler, shape: Shape) -> None:
        self._auth = auth
        self._scope_guard = scope_guard(auth)  # the daemon's guards need no Request: none is built
        self._handle = handle
        self._shape: Shape = shape
        self._watch = DisconnectWatch()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self._scope_guard is not None:
                self._scope_guard(scope)
            else:
                await authorize(self._auth, scope, receive)
            body = await read_body(receive)
            await self._watch.run(self._handle, scope, body, receive, send)
        except StackdError as exc:
            answer = error_answer(exc, self._shape)
            await send_bytes(send, answer.status, answer.json(), answer.raw_headers())
