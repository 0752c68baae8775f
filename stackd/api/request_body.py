"""Bounded request bodies: a ``Content-Length`` read, a ``receive`` that stops at a limit, a
body read whole within one, and a ``receive`` that replays a body already read (the front door,
``stackd.api.dispatch``, uses them before anything else sees a request)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Message, Receive, Scope

from stackd.errors import StackdError

BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # TRACE: 405, never a body read


class BodyTooLarge(StackdError):
    """A request body past the route's limit (413)."""

    status = 413


@dataclass(frozen=True)
class BodyLimits:
    """Bytes a request body may have: ``control`` on the FastAPI routes, ``data`` on the hot paths."""

    control: int
    data: int


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body over {limit:,} bytes; send a shorter one", limit_bytes=limit)


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``; None when absent (chunked) or not a number."""
    value = header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


class LimitedReceive:
    """``receive`` that raises ``BodyTooLarge`` instead of delivering more than ``limit`` bytes.

    A ``Content-Length`` over the limit raises at the first call, before a byte is read; the
    endpoint calls it only after its token check, so an unauthenticated caller gets 401."""

    __slots__ = ("_declared", "_left", "_limit", "_receive")

    def __init__(self, receive: Receive, limit: int, declared: int | None) -> None:
        self._receive = receive
        self._limit = limit
        self._left = limit
        self._declared = declared

    async def __call__(self) -> Message:
        if self._declared is not None and self._declared > self._limit:
            raise too_large(self._limit)
        message = await self._receive()
        if message["type"] == "http.request":
            self._left -= len(message.get("body", b""))
            if self._left < 0:
                raise too_large(self._limit)
        return message


class Replay:
    """``receive`` that gives the body already read as one message, then the live ``receive``
    (a streaming response waits on it for ``http.disconnect``)."""

    __slots__ = ("_body", "_receive")

    def __init__(self, body: bytes | None, receive: Receive) -> None:
        self._body = body
        self._receive = receive

    async def __call__(self) -> Message:
        body, self._body = self._body, None
        if body is None:
            return await self._receive()
        return {"type": "http.request", "body": body, "more_body": False}


async def read_limited(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when it passes ``limit`` (reading stops there) or the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None
