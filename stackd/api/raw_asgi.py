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
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from stackd.api.auth import scope_guard
from stackd.api.errors import Shape, error_answer, invalid_request_message, problem
from stackd.errors import StackdError
from stackd.state.json_bytes import dumps as dumps  # re-exported: the raw routes write with it

Auth = Callable[[Request], object]  # the app's auth dependency: raises, or returns (an awaitable)
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
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


async def until_disconnect(handle: Handler, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``handle``; when the client goes away first, cancel it.

    Cancelling closes the backend's connection, so an engine stops generating for a caller that
    left (a disconnected SSE reader, a Ctrl-C in ``stackd reason``, a client's own timeout)
    instead of spending its single slot on an answer nobody reads. Once the request body has
    been read, the next ASGI message can only be ``http.disconnect``: a watcher task waits for
    it and cancels this task. The watcher starts ``WATCH_AFTER_S`` after the body was read, by
    a timer: most gateway calls end sooner and never pay for a task (a disconnect in between
    waits in uvicorn's queue, and the watcher reads it at once). ``handle`` runs in this task
    (no second task, no ``wait``/``gather``: each costs event-loop turns on the hot path)."""
    this = asyncio.current_task()
    assert this is not None
    loop = asyncio.get_running_loop()
    watcher: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    gone = False

    async def client_gone() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        this.cancel()

    def watch() -> None:
        nonlocal watcher
        watcher = loop.create_task(client_gone())

    async def receive_body() -> Message:
        nonlocal timer
        message = await receive()
        if timer is None and (message["type"] != "http.request" or not message.get("more_body")):
            timer = loop.call_later(WATCH_AFTER_S, watch)
        return message

    try:
        await handle(scope, receive_body, send)
    except asyncio.CancelledError:
        if not gone:
            raise
        this.uncancel()  # the cancellation was ours: the client left, nobody to answer
    finally:
        # Synchronously after ``handle``: a watcher scheduled to run now is cancelled before it
        # can cancel this task.
        if timer is not None:
            timer.cancel()
        if watcher is not None:
            watcher.cancel()


class RawEndpoint:
    """An ASGI app for one POST route: ``handle(scope, receive, send)`` does the work; every
    ``StackdError`` becomes the error table's answer in ``shape`` (``stackd.api.errors``)."""

    def __init__(self, auth: Auth, handle: Handler, shape: Shape) -> None:
        self._auth = auth
        self._scope_guard = scope_guard(auth)  # the daemon's guards need no Request: none is built
        self._handle = handle
        self._shape: Shape = shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self._scope_guard is not None:
                self._scope_guard(scope)
            else:
                await authorize(self._auth, scope, receive)
            await until_disconnect(self._handle, scope, receive, send)
        except StackdError as exc:
            answer = error_answer(exc, self._shape)
            await send_bytes(send, answer.status, answer.json(), answer.raw_headers())
