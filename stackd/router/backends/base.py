"""What every backend is, and the HTTP plumbing they share.

A backend is one model reached over its own protocol. It is stateless apart from the shared
``aiohttp.ClientSession`` it is given: the router owns that session (one connection pool for
the whole data path) and the timeouts. Backends translate every failure of the wire into a
``BackendError`` of one ``FailureKind``; the router turns those into attempts and circuit
decisions. A backend never retries and never logs.

Time limits: the session's ``sock_connect`` bounds the connect; the router wraps each call in
``asyncio.timeout`` for the first-token and total limits, so a backend must let
``CancelledError`` pass untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp

from stackd.config.models import Model
from stackd.router.types import BackendError, ChatRequest, Completion, FailureKind, StreamEvent

ERROR_SNIPPET_CHARS = 300


class Backend(Protocol):
    """One model behind one protocol."""

    name: str  # the config model name
    request_model: str  # the model name put in requests

    def not_ready(self) -> str | None:
        """A reason this backend cannot be called now (a missing API key), else None. No I/O."""
        ...

    async def complete(self, request: ChatRequest) -> Completion:
        """One non-streaming call. Raises ``BackendError``; never retries."""
        ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Text deltas, then exactly one ``StreamFinish``; raises ``BackendError`` on any failure,
        ``stream_cut`` when the stream ends before the protocol's end marker."""
        ...


def api_key(model: Model) -> str | None:
    """The model's key, read from its environment variable at call time (never cached)."""
    if model.remote is None or model.remote.api_key_env is None:
        return None
    return os.environ.get(model.remote.api_key_env) or None


def missing_key_reason(model: Model) -> str | None:
    if model.remote is not None and model.remote.api_key_env and not api_key(model):
        return f"API key variable {model.remote.api_key_env} is not set"
    return None


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def text_of(content: Any) -> str:
    """The text of an OpenAI message content: a string, or the text parts of a part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def decode_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BackendError(FailureKind.malformed, f"{what} is not JSON: {raw[:80]!r}") from exc


def malformed(what: str) -> BackendError:
    return BackendError(FailureKind.malformed, what)


@asynccontextmanager
async def post(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    secret: str | None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST JSON and yield a 2xx response; every wire failure becomes a ``BackendError``.

    A failure before the response head is ``refused`` (or ``timeout`` for the connect limit);
    a dropped connection while the body is read is ``stream_cut``; 4xx/5xx carry a snippet of
    the peer's error body with the key redacted.
    """
    head = False
    try:
        async with session.post(url, data=json.dumps(payload), headers=headers) as resp:
            head = True
            if resp.status >= 400:
                body = (await resp.content.read(ERROR_SNIPPET_CHARS)).decode("utf-8", "replace")
                kind = FailureKind.http_5xx if resp.status >= 500 else FailureKind.http_4xx
                raise BackendError(kind, redact(f"HTTP {resp.status} from {url}: {body.strip()}", secret))
            yield resp
    except aiohttp.ConnectionTimeoutError as exc:
        raise BackendError(FailureKind.timeout, f"connect to {url} timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        raise BackendError(
            FailureKind.refused, f"cannot connect to {url}: {exc.os_error.strerror or exc}"
        ) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        if head:
            raise BackendError(FailureKind.stream_cut, f"connection to {url} dropped mid-answer") from exc
        raise BackendError(FailureKind.refused, f"{url} closed the connection before answering") from exc
    except aiohttp.ClientResponseError as exc:
        raise BackendError(FailureKind.malformed, f"bad HTTP answer from {url}: {exc.message}") from exc


async def read_json(resp: aiohttp.ClientResponse, what: str) -> Any:
    return decode_json(await resp.read(), what)


async def sse_data(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The payload of each ``data:`` line of a server-sent-event stream (comments, event names
    and blank lines are skipped; each protocol here puts one JSON object per data line)."""
    async for raw in resp.content:
        if raw.startswith(b"data:"):
            yield raw[5:].strip()
