"""The daemon's front door: bounded bodies, the token before any body, the hot paths before FastAPI.

Every HTTP request passes through ``FrontDoor`` before anything else sees it:

1. **Hot paths** (``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /tools/reason`` …,
   every raw ASGI ``RawEndpoint`` the app mounts) go straight to their endpoint. A py-spy profile
   of the gateway at 16 connections put about 30% of stackd's CPU in FastAPI's middleware stack
   and route matching around those raw endpoints (issue 13); the control API keeps FastAPI. A raw
   endpoint checks its token before it reads a byte of the body.
2. **The token before the body.** FastAPI reads and parses a body before it runs a route's
   dependencies, so a malformed JSON body got 422 before 401, and a 100 MB body was read before
   the token was checked. Every route that accepts a body (every method but GET, HEAD, OPTIONS, TRACE)
   needs the write token, so a request of such a method without it is answered 401 here, its
   body unread. A body declared within the control limit is dropped by the server on an open
   connection (closing under it would reset the connection and could lose the answer); a larger
   one, or one of unknown length, gets the connection closed so it is never uploaded.
3. **Bounded bodies.** A body longer than its limit is answered 413: before reading it when
   ``Content-Length`` says so, else as soon as the bytes read pass the limit. The control API's
   limit is ``Settings.max_body_bytes``; the data path's (prompts) ``max_gateway_body_bytes``.
   The control API's body (at most its limit) is read here and replayed to FastAPI, which would
   otherwise read it all and turn any error while reading into a 400.

4. **A line for every failed answer.** Each answer of 500 or more gets one WARNING line
   (``stackd.access``: method, path, status, milliseconds and the answer's message) with its
   request id, with or without ``Settings.log_requests`` (which logs every answer so): a 504 or
   a 503 has a line an operator can find by the id the caller got. A request whose handler
   raised keeps its id set, so that the server's own traceback line after it carries it too.

Nothing here allocates more than a small object per request, and nothing creates a reference
cycle: the hot path's garbage is freed by reference counting, not by the cyclic collector.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stackd.api.access_lines import RequestIdSend, access_line, answer_message
from stackd.api.auth import CALLER_KEY
from stackd.api.errors import ErrorAnswer, error_answer, shape_of
from stackd.api.gate import Gate, peer_of, target_of
from stackd.api.keyring import Caller
from stackd.api.request_body import (
    BODYLESS_METHODS,
    BodyLimits,
    LimitedReceive,
    Replay,
    declared_length,
    header,
    read_limited,
    too_large,
)
from stackd.errors import StackdError
from stackd.logs.request_id import HEADER_KEY as REQUEST_ID_KEY
from stackd.logs.request_id import REQUEST_ID, SCOPE_KEY, accepted

log = logging.getLogger("stackd.api")

Guard = Callable[[Request], object]  # raises ``Unauthorized``; the app's ``bearer_guard``


async def refuse(send: Send, exc: StackdError) -> None:
    """Answer ``exc`` in stackd's shape and close the connection: the body is left unread."""
    await send_error(send, error_answer(exc), close=True)


async def refuse_before_body(scope: Scope, send: Send, exc: StackdError, limit: int) -> None:
    """Answer ``exc`` to a request whose body nobody reads. Closing with a body still in flight
    makes the kernel reset the connection, and the client may lose the answer itself
    (schemathesis met that about once in 800 refused POSTs). So a body declared within ``limit``
    is left to the server, which drops it while the connection stays open; only a larger one, or
    one of unknown length, gets the connection closed so that it is never uploaded."""
    declared = declared_length(scope)
    close = (declared is None and scope["method"] not in BODYLESS_METHODS) or (declared or 0) > limit
    await send_error(send, error_answer(exc, shape_of(scope["path"])), close=close)


async def send_error(send: Send, answer: ErrorAnswer, close: bool = False) -> None:
    """Send an answer of the error table (``stackd.api.errors``); ``close`` ends the connection."""
    body = answer.json()
    headers = [*answer.raw_headers(), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def internal_error(send: Send, exc: Exception, path: str) -> None:
    """A bug's answer, as FastAPI's handler gives it on the control API (OpenAI's shape under
    /v1): the exception's text may hold anything (a URL with credentials), so it is not repeated.
    When the answer had begun, uvicorn closes the connection instead."""
    with contextlib.suppress(RuntimeError):  # uvicorn: the answer had already begun
        await send_error(send, error_answer(exc, shape_of(path)))


class FrontDoor:
    """The ASGI app in front of FastAPI (see the module's docstring). ``app`` is FastAPI's own
    ASGI entry; ``hot`` maps (method, path) to a raw endpoint; ``write`` is the guard of every
    route that takes a body. Every request gets a request id (the caller's ``X-Request-ID``
    when usable, else a new one): in ``REQUEST_ID`` while it is served, so that each log line
    and each backend call carries it, and in the answer's ``X-Request-ID``. ``access_log``:
    one line per request once it is answered."""

    def __init__(
        self,
        app: ASGIApp,
        hot: Mapping[tuple[str, str], ASGIApp],
        write: Guard,
        limits: BodyLimits,
        access_log: bool = False,
        gate: Gate | None = None,
    ) -> None:
        self._app = app
        self._hot = dict(hot)
        self._write = write
        self._limits = limits
        self._access_log = access_log
        self._gate = gate  # keys and scopes (stackd.api.gate); without it, ``write`` guards every body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = accepted(header(scope, REQUEST_ID_KEY))
        scope[SCOPE_KEY] = request_id  # for handlers that run outside this task (the MCP SDK's)
        token = REQUEST_ID.set(request_id)
        tagged = RequestIdSend(send, request_id.encode())
        started = time.perf_counter()
        try:
            await self._serve(scope, receive, tagged)
        except Exception as exc:
            # uvicorn logs the traceback once this returns, in this task (a context of its own
            # per request): the id stays set so that its line carries it.
            why = answer_message(tagged.error_body) or f"unhandled {type(exc).__name__}"
            access_line(scope, tagged.status or 500, started, why)
            raise
        if self._access_log or tagged.status >= 500:
            access_line(scope, tagged.status, started, answer_message(tagged.error_body))
        REQUEST_ID.reset(token)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._gate is not None:
            await self._serve_gated(self._gate, scope, receive, send)
            return
        method = scope["method"]
        hot = self._hot.get((method, scope["path"]))
        if hot is not None:
            try:
                await hot(scope, LimitedReceive(receive, self._limits.data, declared_length(scope)), send)
            except Exception as exc:
                log.exception("%s %s failed", method, scope["path"])
                await internal_error(send, exc, scope["path"])
            return
        limit = self._limits.control
        if method in BODYLESS_METHODS:
            declared = declared_length(scope)
            if declared is not None and declared > limit:
                await refuse(send, too_large(limit))
                return
            await self._app(scope, receive, send)
            return
        try:
            self._write(Request(scope))
        except StackdError as exc:
            await refuse_before_body(scope, send, exc, limit)
            return
        declared = declared_length(scope)
        body = None if declared is not None and declared > limit else await read_limited(receive, limit)
        if body is None:
            await refuse(send, too_large(limit))
            return
        await self._app(scope, Replay(body, receive), send)

    async def _model_checked(
        self, gate: Gate, caller: Caller, scope: Scope, receive: Receive, send: Send
    ) -> Receive | None:
        """A key limited to some models: its body's model is read here, before the endpoint. The
        body to replay to the endpoint, or None once the request is answered (413, 403)."""
        limit, declared = self._limits.data, declared_length(scope)
        body = None if declared is not None and declared > limit else await read_limited(receive, limit)
        if body is None:
            await refuse(send, too_large(limit))
            return None
        try:
            gate.allowed_model(caller, scope["path"], body)
        except StackdError as exc:
            await send_error(send, error_answer(exc, shape_of(scope["path"])))
            return None
        return Replay(body, receive)

    async def _serve_gated(self, gate: Gate, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request through the gate first (a body is never read before it admits it)."""
        method, path = scope["method"], scope["path"]
        try:
            caller, rule = gate.admit(scope)
        except StackdError as exc:
            await refuse_before_body(scope, send, exc, self._limits.control)
            await gate.refused(scope, exc)
            return
        scope[CALLER_KEY] = caller
        hot = self._hot.get((method, path))
        if hot is not None:
            declared = declared_length(scope)
            hot_receive: Receive = LimitedReceive(receive, self._limits.data, declared)
            if caller.models and method not in BODYLESS_METHODS:
                checked = await self._model_checked(gate, caller, scope, receive, send)
                if checked is None:
                    return
                hot_receive = checked
            try:
                await hot(scope, hot_receive, send)
            except Exception as exc:
                log.exception("%s %s failed", method, path)
                await internal_error(send, exc, path)
            return
        limit = self._limits.control
        declared = declared_length(scope)
        if method in BODYLESS_METHODS:
            if declared is not None and declared > limit:
                await refuse(send, too_large(limit))
                return
            await self._app(scope, receive, send)
            return
        body = None if declared is not None and declared > limit else await read_limited(receive, limit)
        if body is None:
            await refuse(send, too_large(limit))
            return
        await self._app(scope, Replay(body, receive), send)
        if gate.is_control(rule, method):
            status = str(getattr(send, "status", 0))
            await gate.audit(
                caller,
                f"{method} {rule.path if rule else path}",
                target_of(rule, path, body),
                peer_of(scope),
                status,
            )


def hot_routes(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], ASGIApp]:
    """(method, path) → endpoint of the raw ASGI routes (``RawEndpoint``) on a fixed path among
    ``routes``. HEAD stays with FastAPI: a raw endpoint always sends a body."""
    from stackd.api.raw_asgi import RawEndpoint

    return {
        (method, route.path): route.endpoint
        for route in routes
        if isinstance(route, Route) and isinstance(route.endpoint, RawEndpoint) and "{" not in route.path
        for method in route.methods or ()
        if method != "HEAD"
    }


class StackdApp(FastAPI):
    """FastAPI with a ``FrontDoor`` before its middleware stack (``create_app`` sets it)."""

    front_door: FrontDoor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front_door is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front_door(scope, receive, send)

    async def behind_front_door(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own entry: middleware, routing, the control API."""
        await super().__call__(scope, receive, send)
