"""What every backend is, and the HTTP plumbing they share.

A backend is one model reached over its own protocol. It is stateless apart from the shared
``HttpClient`` it is given (``stackd.router.http_client``): the router owns that client (one
connection pool for the whole data path) and the timeouts. Backends translate every failure of the wire into a
``BackendError`` of one ``FailureKind``; the router turns those into attempts and circuit
decisions. A backend never retries and never logs.

``post`` is the one place where the wire's exceptions are translated: whatever the client, the
parser or a backend's own reading of the answer raises inside ``async with post(...)`` leaves
it as a ``BackendError`` (``wire_error`` says which kind), so a backend's parsing belongs inside
that block. Upstream text enters stackd only through ``Wire.text``: decoded, redacted, then cut
(``stackd.router.redaction``).

Time limits: the client's ``connect_s`` bounds the connect; the router wraps each call in a
time limit that cancels it (``stackd.router.deadline``, ``asyncio.timeout`` for streams) for the
first-token and total limits, so a backend must let
``CancelledError`` pass untouched (it is not an ``Exception``).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from stackd.config.models import Model
from stackd.logs.request_id import HEADER as REQUEST_ID_HEADER
from stackd.logs.request_id import upstream_id
from stackd.router.http_client import (
    BadAnswer,
    BadHeader,
    ConnectFailed,
    ConnectTimedOut,
    Disconnected,
    Exchange,
    HttpAnswer,
    HttpClient,
    HttpFailure,
    InvalidUrl,
)
from stackd.router.redaction import Redactor, split_userinfo
from stackd.router.types import BackendError, ChatRequest, Completion, FailureKind, StreamEvent
from stackd.state.json_bytes import dumps, loads

ERROR_SNIPPET_CHARS = 300  # of an error body, after redaction
ERROR_BODY_READ_BYTES = 16 * 1024  # read this much of an error body: a key past the cut is whole
SNIPPET_CHARS = 120  # of a malformed answer, chunk or event
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # a whole non-streaming answer
MAX_STREAM_LINE_BYTES = 1024 * 1024  # one SSE / NDJSON line


class Backend(Protocol):
    """One model behind one protocol."""

    name: str  # the config model name
    request_model: str  # the model name put in requests

    def not_ready(self) -> str | None:
        """A reason this backend cannot be called now (a missing API key), else None. No I/O."""
        ...

    def unsupported(self, request: ChatRequest) -> str | None:
        """What of the request's contract (``response_format``, ``tools``, ``tool_choice``) this
        backend cannot honour, else None; the router then skips it with this reason. No I/O."""
        ...

    async def complete(self, request: ChatRequest) -> Completion:
        """One non-streaming call. Raises ``BackendError``; never retries."""
        ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """Text deltas, then exactly one ``StreamFinish``; raises ``BackendError`` on any failure,
        ``stream_cut`` when the stream ends before the protocol's end marker."""
        ...


@dataclass(frozen=True, slots=True)
class Wire:
    """Where a backend's requests go and how its upstream's text is made safe to keep.

    ``url`` never carries userinfo: it is what is requested and what messages show. Credentials
    written in the endpoint's URL travel as an ``Authorization: Basic`` header instead (so a
    protocol whose key is that header cannot have both, see ``authorization_conflict``)."""

    url: str
    basic_auth: str | None  # the Authorization header made of the URL's user:password
    redact: Redactor

    @classmethod
    def to(cls, url: str, redact: Redactor) -> Wire:
        bare, userinfo = split_userinfo(url)
        basic = None
        if userinfo is not None:
            user, _, password = userinfo.partition(":")
            login = unquote(user)
            # Basic auth cannot carry a ':' in the user: such a user (written %3A) is sent as written
            basic = basic_auth(user if ":" in login else login, unquote(password))
        return cls(bare, basic, redact)

    def api_key(self, model: Model) -> str | None:
        """``model``'s key, from the daemon's ``Secrets`` (the redactor's: it hides the same ones)."""
        return self.redact.keys.api_key(model)

    def text(self, raw: bytes | str, limit: int = SNIPPET_CHARS) -> str:
        """Upstream text, fit to put in a message: redacted, then cut (the only way in)."""
        return self.redact.snippet(raw, limit)

    def shown(self, value: object, limit: int = SNIPPET_CHARS) -> str:
        """A parsed upstream value (an error object, an answer of the wrong shape) as text."""
        try:
            raw = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            raw = repr(value)
        return self.text(raw, limit)


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization`` value of HTTP Basic credentials (RFC 7617, UTF-8 as browsers send)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def missing_key_reason(model: Model, wire: Wire) -> str | None:
    if model.remote is not None and model.remote.api_key_env and not wire.api_key(model):
        return f"API key variable {model.remote.api_key_env} is not set"
    return None


def authorization_conflict(model: Model, wire: Wire) -> str | None:
    """Why a protocol that sends its key as ``Authorization`` cannot call an endpoint with
    credentials in its URL (Basic auth wants the same header); None when there is no clash."""
    if wire.basic_auth is None or wire.api_key(model) is None:
        return None
    assert model.remote is not None and model.remote.api_key_env is not None
    return (
        f"the endpoint has credentials in its URL and {model.remote.api_key_env} is set: both "
        "would be the Authorization header; keep one (drop the URL's user:password@, or unset "
        "api_key_env)"
    )


def text_of(content: object) -> str:
    """The text of an OpenAI message content: a string, or the text parts of a part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def token_count(value: object) -> int | None:
    """A token count as an upstream reported it; None when it reported none (unknown, not 0).
    A value that is not a number raises ``ValueError`` / ``TypeError``: inside ``post`` the
    answer is then ``malformed``."""
    if value is None:
        return None
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"a token count is a number, not {type(value).__name__}")


def decode_json(raw: bytes, what: str, wire: Wire) -> Any:
    try:
        return loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; [[[[… recurses
        raise BackendError(FailureKind.malformed, f"{what} is not JSON: {wire.text(raw)!r}") from None


def malformed(what: str) -> BackendError:
    return BackendError(FailureKind.malformed, what)


def error_event(wire: Wire, error: object) -> BackendError:
    """An error the upstream reported inside a 200 answer or stream."""
    return BackendError(FailureKind.http_5xx, f"error event: {wire.shown(error, 200)}")


def post(client: HttpClient, wire: Wire, payload: Mapping[str, object], headers: dict[str, str]) -> Posting:
    """POST JSON: ``async with post(...) as resp`` has a 2xx answer; every failure inside the
    block becomes a ``BackendError``.

    A failure before the response head is ``refused`` (or ``timeout`` for the connect limit);
    a dropped connection while the body is read is ``stream_cut``; 3xx (never followed: a key
    goes only to its endpoint), 4xx and 5xx carry a redacted snippet of the peer's body.
    """
    if wire.basic_auth is not None:
        if "Authorization" in headers:
            raise BackendError(
                FailureKind.refused, f"{wire.url}: URL credentials and a key both need Authorization"
            )
        headers = {**headers, "Authorization": wire.basic_auth}
    request_id = upstream_id()
    if request_id is not None:  # the caller's call, traced upstream
        headers = {**headers, REQUEST_ID_HEADER: request_id}
    return Posting(client, wire, dumps(payload), headers)


class Posting:
    """``post``'s block (a class, not a generator: this runs on every call). Whatever the client
    or the block raises leaves as a ``BackendError``, without the original's message chained: it
    may hold upstream text that was never redacted, and a traceback would print it into a log."""

    __slots__ = ("_body", "_client", "_exchange", "_headers", "_wire")

    def __init__(self, client: HttpClient, wire: Wire, body: bytes, headers: dict[str, str]) -> None:
        self._client = client
        self._wire = wire
        self._body = body
        self._headers = headers
        self._exchange: Exchange | None = None

    async def __aenter__(self) -> HttpAnswer:
        try:
            exchange = self._exchange = self._client.post(self._wire.url, self._body, self._headers)
            resp = await exchange.__aenter__()
        except BackendError:
            raise
        except Exception as exc:
            raise wire_error(exc, self._wire, False) from None
        if resp.status >= 300:
            try:
                error = await status_error(resp, self._wire)
            except BaseException as exc:  # cancelled while the error body was read
                await exchange.__aexit__(type(exc), exc, None)
                raise
            await exchange.__aexit__(BackendError, error, None)  # the connection is not reused
            raise error
        return resp

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        assert self._exchange is not None
        await self._exchange.__aexit__(kind, exc, tb)
        if isinstance(exc, Exception) and not isinstance(exc, BackendError):
            raise wire_error(exc, self._wire, True) from None


async def status_error(resp: HttpAnswer, wire: Wire) -> BackendError:
    """The failure of a non-2xx answer, with the start of its body (redacted before the cut)."""
    body = b""
    # the status is the news; a body cut short is only its detail
    with contextlib.suppress(HttpFailure, OSError):
        body = await read_upto(resp, ERROR_BODY_READ_BYTES)
    where = f"HTTP {resp.status} from {wire.url}"
    if resp.status < 400:
        location = wire.text(resp.headers.get("location", "?"), 200)
        return malformed(
            f"{where}: a redirect to {location}; stackd follows no redirect (a key is sent only to "
            "its endpoint): set the endpoint to the final URL"
        )
    kind = FailureKind.http_5xx if resp.status >= 500 else FailureKind.http_4xx
    return BackendError(kind, f"{where}: {wire.text(body, ERROR_SNIPPET_CHARS)}")


def wire_error(exc: Exception, wire: Wire, head: bool) -> BackendError:
    """The ``BackendError`` of anything raised inside ``post``: ``head`` says whether a response
    head had arrived (a failure then is the answer's, not the connection's)."""
    url = wire.url
    detail = wire.text(str(exc) or type(exc).__name__, 200)
    match exc:
        case ConnectTimedOut():
            return BackendError(FailureKind.timeout, f"connect to {url} timed out")
        case TimeoutError():
            return BackendError(FailureKind.timeout, f"{url} stopped sending: {detail}")
        case InvalidUrl():
            return BackendError(
                FailureKind.refused, f"endpoint {url} is not a valid http(s) URL: fix the model's endpoint"
            )
        case ConnectFailed():
            return BackendError(FailureKind.refused, f"cannot connect to {url}: {detail}")
        case BadHeader():
            return BackendError(FailureKind.refused, f"cannot send a request to {url}: {detail}")
        case BadAnswer():
            # a bad status line, a head over its limit, a broken chunked encoding
            return malformed(f"bad HTTP answer from {url}: {detail}")
        case Disconnected() | OSError() if head:
            return BackendError(FailureKind.stream_cut, f"connection to {url} dropped mid-answer: {detail}")
        case Disconnected() | OSError():
            return BackendError(
                FailureKind.refused, f"{url} closed the connection before answering: {detail}"
            )
        case UnicodeError() | ValueError() | LookupError() | TypeError() | AttributeError() if head:
            return malformed(
                f"answer from {url} is not the protocol's shape ({type(exc).__name__}: {detail})"
            )
        case UnicodeError() | ValueError() | LookupError() | TypeError() | AttributeError():
            return BackendError(FailureKind.refused, f"cannot send a request to {url}: {detail}")
        case _ if head:
            return malformed(f"reading the answer from {url} failed: {type(exc).__name__}: {detail}")
        case _:
            return BackendError(
                FailureKind.refused, f"request to {url} failed: {type(exc).__name__}: {detail}"
            )


async def read_upto(resp: HttpAnswer, limit: int) -> bytes:
    """At most ``limit`` bytes of the body (all of it when shorter)."""
    data = bytearray()
    while len(data) < limit:
        chunk = await resp.read_some(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def read_json(resp: HttpAnswer, wire: Wire, what: str) -> Any:
    """The whole answer as JSON, refused past ``MAX_ANSWER_BYTES``."""
    length = resp.content_length
    if length is not None and length <= MAX_ANSWER_BYTES:
        raw = await resp.read()
    else:
        raw = await read_upto(resp, MAX_ANSWER_BYTES + 1)
    if len(raw) > MAX_ANSWER_BYTES:
        raise malformed(f"{what} from {wire.url} is over {MAX_ANSWER_BYTES // 2**20} MiB")
    return decode_json(raw, what, wire)


async def lines(resp: HttpAnswer, wire: Wire) -> AsyncIterator[bytes]:
    """The body's lines without their ``\\n``, each at most ``MAX_STREAM_LINE_BYTES`` (a longer one
    is ``malformed``: a peer that never ends its line must not fill the memory)."""
    buffer = bytearray()
    async for chunk in resp.chunks():
        scan = len(buffer)  # only the new bytes can hold the next newline
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", scan)) >= 0:
            if end - start > MAX_STREAM_LINE_BYTES:
                break
            yield bytes(buffer[start:end])
            start = scan = end + 1
        if start:
            del buffer[:start]
        if len(buffer) > MAX_STREAM_LINE_BYTES:
            raise malformed(f"a stream line from {wire.url} is over {MAX_STREAM_LINE_BYTES // 1024} KiB")
    if buffer:
        yield bytes(buffer)


async def sse_data(resp: HttpAnswer, wire: Wire) -> AsyncIterator[bytes]:
    """The payload of each ``data:`` line of a server-sent-event stream (comments, event names
    and blank lines are skipped; each protocol here puts one JSON object per data line)."""
    async for line in lines(resp, wire):
        if line.startswith(b"data:"):
            yield line[5:].strip()
