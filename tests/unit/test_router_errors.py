"""Every exception family a backend's wire or parser can raise is a classified, recorded failure.

The failing backend is a real protocol backend (OpenAI unless said otherwise) whose HTTP session
is a stand-in that raises one exception, before the response head (the request could not be
made) or while the body is read; the next strategy is a scripted backend that answers. For each
family: the call is answered by the next strategy, the failed attempt carries its
``FailureKind``, the circuit of the failing backend counted it with the same reason, and the
accounting counted it by kind. Nothing else escapes: a backend that raises something other
than ``BackendError`` is recorded as ``malformed`` too, without its message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import http_exceptions

from stackd.config.models import StacksConfig
from stackd.config.secrets import Secrets
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.backends.anthropic import AnthropicBackend
from stackd.router.backends.base import Backend
from stackd.router.backends.gemini import GeminiBackend
from stackd.router.backends.ollama import OllamaBackend
from stackd.router.backends.openai import OpenAIBackend
from stackd.router.redaction import Redactor
from stackd.router.types import (
    ChatRequest,
    Completion,
    FailureKind,
    StreamDone,
    StreamEvent,
    StreamFinish,
    TextDelta,
    Usage,
)

REQUEST = ChatRequest([{"role": "user", "content": "why?"}])
KEY_ENV, KEY = "TEST_ERRORS_KEY", "sk-errors-canary-7f3a"
FAILING, ANSWERING = "m1", "m2"


def make_config(api: str = "openai", endpoint: str = "http://m1.invalid/v1") -> StacksConfig:
    remote = {
        "runtime": "remote",
        "placement": "cloud",
        "api": api,
        "endpoint": endpoint,
        "remote": {"api_key_env": KEY_ENV},
    }
    if api == "ollama":
        remote = {
            "runtime": "ollama",
            "placement": "cpu",
            "api": "ollama",
            "endpoint": endpoint,
            "ollama": {"tag": "m1:1b", "options": {"num_gpu": 0}},
        }
    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "roles": {"orchestrator": {"required": True}},
            "models": {
                FAILING: remote,
                ANSWERING: {
                    "runtime": "docker",
                    "placement": "gpu",
                    "api": "openai",
                    "endpoint": "http://m2.invalid/v1",
                    "docker": {"container": "m2"},
                },
            },
            "stacks": {"s": {"roles": {"orchestrator": ANSWERING}, "members": [FAILING]}},
            "reason": {
                "strategies": {"first": {"models": [FAILING]}, "second": {"role": "orchestrator"}},
                "default_chain": ["first", "second"],
                "timeouts": {"connect_s": 1, "first_token_s": 2, "total_s": 5},
                "circuit": {"failure_threshold": 3, "cooldown_s": 30},
            },
        }
    )


# ---------------------------------------------------------------- a session that fails as told
class FakeContent:
    def __init__(self, body: bytes | BaseException) -> None:
        self._body = body

    def _bytes(self) -> bytes:
        if isinstance(self._body, BaseException):
            raise self._body
        return self._body

    async def read(self, n: int = -1) -> bytes:
        body, self._body = self._bytes(), b""
        return body

    async def iter_any(self) -> AsyncIterator[bytes]:
        body = self._bytes()
        if body:
            yield body


class FakeResponse:
    def __init__(self, status: int, body: bytes | BaseException) -> None:
        self.status = status
        self.headers: dict[str, str] = {}
        self.content_length = None
        self.content = FakeContent(body)

    async def read(self) -> bytes:
        return await self.content.read()


class FakeRequest:
    def __init__(self, session: FakeSession) -> None:
        self._session = session

    async def __aenter__(self) -> FakeResponse:
        if self._session.before_head is not None:
            raise self._session.before_head
        return FakeResponse(self._session.status, self._session.body)

    async def __aexit__(self, *exc: object) -> None:
        return None


class FakeSession:
    """Stands in for ``aiohttp.ClientSession``: ``post`` raises ``before_head`` on entering, or
    answers ``status`` with ``body`` (bytes, or an exception raised when the body is read)."""

    def __init__(
        self, before_head: BaseException | None = None, status: int = 200, body: bytes | BaseException = b""
    ) -> None:
        self.before_head = before_head
        self.status = status
        self.body = body
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def post(self, url: str, **kwargs: Any) -> FakeRequest:
        self.posts.append((url, kwargs))
        return FakeRequest(self)


class Answering:
    name = ANSWERING
    request_model = "served-m2"

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def complete(self, request: ChatRequest) -> Completion:
        return Completion("answer from m2", "stop", Usage(1, 2))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        yield TextDelta("answer from m2")
        yield StreamFinish("stop", Usage(1, 2))


PROTOCOLS: dict[str, Callable[..., Backend]] = {
    "openai": lambda m, s, r: OpenAIBackend(FAILING, m, s, r),
    "anthropic": lambda m, s, r: AnthropicBackend(FAILING, m, s, r),
    "gemini": lambda m, s, r: GeminiBackend(FAILING, m, s, r),
    "ollama": lambda m, s, r: OllamaBackend(FAILING, m, s, "http://unused", r),
}


def router_over(config: StacksConfig, failing: Backend) -> ReasonRouter:
    stack = config.stacks["s"]
    table = RoleTable("s", dict(stack.roles), frozenset(stack.member_names))

    def factory(name: str, session: aiohttp.ClientSession) -> Backend | None:
        return failing if name == FAILING else Answering()

    return ReasonRouter(config, LiveRoles(table), backend_factory=factory)


def protocol_router(session: FakeSession, api: str = "openai", endpoint: str | None = None) -> ReasonRouter:
    config = make_config(api, endpoint or "http://m1.invalid/v1")
    secrets = Secrets({KEY_ENV: KEY})  # the daemon's Secrets, as a dict: no process-wide variable
    backend = PROTOCOLS[api](config.models[FAILING], session, Redactor.for_config(config, secrets))
    return router_over(config, backend)


async def call(router: ReasonRouter, streaming: bool) -> tuple[str, list[Any]]:
    """(the answering backend, the attempts) of one call, plain or streamed."""
    try:
        if not streaming:
            answer = await router.reason(REQUEST)
            return answer.backend, list(answer.attempts)
        items = [item async for item in router.stream(router.reason_route(), REQUEST)]
        done = items[-1]
        assert isinstance(done, StreamDone), done
        return done.answer.backend, list(done.answer.attempts)
    finally:
        await router.aclose()


def assert_recorded(router: ReasonRouter, backend: str, attempts: list[Any], kind: FailureKind) -> None:
    assert backend == ANSWERING, attempts
    failed = attempts[0]
    assert (failed.backend, failed.status, failed.kind) == (FAILING, "failed", kind), failed
    assert failed.reason.startswith(f"{kind.value}: "), failed.reason
    circuit = router.circuit(FAILING)
    assert circuit.consecutive_failures == 1 and circuit.last_failure == failed.reason
    row = next(r for r in router.accounting.stats() if r["backend"] == FAILING)
    assert row["failures"] == {kind.value: 1}
    assert attempts[1].status == "answered"


def conn_key() -> Any:
    from aiohttp.client_reqrep import ConnectionKey

    return ConnectionKey("m1.invalid", 443, True, True, None, None, None)


def request_info() -> aiohttp.RequestInfo:
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    url = URL("http://m1.invalid/v1/chat/completions")
    return aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)


# What aiohttp raises before there is a response head: the request never became an answer.
BEFORE_HEAD: dict[str, tuple[BaseException, FailureKind]] = {
    "InvalidUrlClientError": (
        aiohttp.InvalidUrlClientError("not a url at all/chat/completions"),
        FailureKind.refused,
    ),
    "NonHttpUrlClientError": (aiohttp.NonHttpUrlClientError("ftp://m1.invalid/v1"), FailureKind.refused),
    "ValueError (Authorization with URL credentials)": (
        ValueError("Cannot combine AUTHORIZATION header with AUTH argument or credentials encoded in URL"),
        FailureKind.refused,
    ),
    "UnicodeEncodeError (a header aiohttp cannot encode)": (
        UnicodeEncodeError("latin-1", "ключ", 0, 4, "ordinal not in range(256)"),
        FailureKind.refused,
    ),
    "ClientConnectorError": (
        aiohttp.ClientConnectorError(conn_key(), ConnectionRefusedError(111, "Connection refused")),
        FailureKind.refused,
    ),
    "ClientConnectorDNSError": (
        aiohttp.ClientConnectorDNSError(conn_key(), OSError(-2, "Name or service not known")),
        FailureKind.refused,
    ),
    "ClientConnectorCertificateError": (
        aiohttp.ClientConnectorCertificateError(conn_key(), OSError(1, "certificate verify failed")),
        FailureKind.refused,
    ),
    "ClientProxyConnectionError": (
        aiohttp.ClientProxyConnectionError(conn_key(), OSError(111, "proxy refused")),
        FailureKind.refused,
    ),
    "ServerFingerprintMismatch": (
        aiohttp.ServerFingerprintMismatch(b"a", b"b", "m1.invalid", 443),
        FailureKind.refused,
    ),
    "ServerDisconnectedError": (aiohttp.ServerDisconnectedError(), FailureKind.refused),
    "ClientOSError": (aiohttp.ClientOSError(104, "Connection reset by peer"), FailureKind.refused),
    "ClientConnectionResetError": (aiohttp.ClientConnectionResetError("reset"), FailureKind.refused),
    "ConnectionTimeoutError": (aiohttp.ConnectionTimeoutError("connect timed out"), FailureKind.timeout),
    "TooManyRedirects": (aiohttp.TooManyRedirects(request_info(), ()), FailureKind.malformed),
    "ClientResponseError (bad status line)": (
        aiohttp.ClientResponseError(request_info(), (), status=400, message="Bad status line 'garbage'"),
        FailureKind.malformed,
    ),
    "LineTooLong (a header over 8 KiB)": (
        http_exceptions.LineTooLong(b"x" * 100, "8190"),
        FailureKind.malformed,
    ),
    "BadStatusLine": (http_exceptions.BadStatusLine("garbage"), FailureKind.malformed),
    "RuntimeError (anything else)": (RuntimeError("something unexpected"), FailureKind.refused),
}

# What the body's reading or parsing raises once the head has arrived.
AFTER_HEAD: dict[str, tuple[bytes | BaseException, FailureKind]] = {
    "ClientPayloadError": (
        aiohttp.ClientPayloadError("Response payload is not completed"),
        FailureKind.stream_cut,
    ),
    "ServerDisconnectedError": (aiohttp.ServerDisconnectedError(), FailureKind.stream_cut),
    "IncompleteReadError": (asyncio.IncompleteReadError(b"partial", 100), FailureKind.stream_cut),
    "ConnectionResetError": (ConnectionResetError(104, "Connection reset by peer"), FailureKind.stream_cut),
    "SocketTimeoutError": (aiohttp.SocketTimeoutError("read timed out"), FailureKind.timeout),
    "TransferEncodingError": (http_exceptions.TransferEncodingError("bad chunk size"), FailureKind.malformed),
    "ValueError (Chunk too big)": (ValueError("Chunk too big"), FailureKind.malformed),
    "UnicodeDecodeError (raised by a reader)": (
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        FailureKind.malformed,
    ),
    "RuntimeError (anything else)": (RuntimeError("reader broke"), FailureKind.malformed),
}

# Bodies that arrive whole and are not the protocol's answer (plain calls and streams).
BAD_BODIES: dict[str, bytes] = {
    "not JSON": b'{"choices": [',
    "invalid UTF-8 (UnicodeDecodeError)": b'{"choices": "\xff\xfe"}',
    "nested 100k deep (RecursionError)": b"[" * 100_000 + b"]" * 100_000,
    "JSON of the wrong shape (KeyError)": b'{"object": "chat.completion"}',
    "a choice that is not an object (AttributeError)": b'{"choices": [42]}',
    "usage that is not a number (ValueError)": (
        b'{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "many"}}'
    ),
}
BAD_STREAMS: dict[str, bytes] = {
    "a chunk that is not JSON": b'data: {"choices": [\n\n',
    "a chunk that is not an object": b"data: [1, 2]\n\n",
    "a delta that is not text": b'data: {"choices": [{"delta": {"content": 42}}]}\n\n',
    "a choice that is not an object": b'data: {"choices": [7]}\n\n',
    "usage that is not a number": b'data: {"choices": [], "usage": {"prompt_tokens": "many"}}\n\n',
    "a line over 1 MiB": b"data: " + b"a" * (1024 * 1024 + 10),
    "an error event": b'data: {"error": {"message": "overloaded"}}\n\n',
    "the end before [DONE]": b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n',
}
# Each protocol's reader meets a value where it wants an object or a list.
WRONG_EVERYWHERE = b'{"type": "content_block_delta", "delta": 5, "choices": 5, "candidates": 5, "message": 5}'
STREAM_KIND = {"an error event": FailureKind.http_5xx, "the end before [DONE]": FailureKind.stream_cut}


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("family", list(BEFORE_HEAD))
async def test_a_failure_before_the_head_is_recorded_and_the_next_strategy_answers(
    family: str, streaming: bool
) -> None:
    exc, kind = BEFORE_HEAD[family]
    router = protocol_router(FakeSession(before_head=exc))
    backend, attempts = await call(router, streaming)
    assert_recorded(router, backend, attempts, kind)


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("family", list(AFTER_HEAD))
async def test_a_failure_while_the_body_is_read_is_recorded_and_the_next_strategy_answers(
    family: str, streaming: bool
) -> None:
    body, kind = AFTER_HEAD[family]
    router = protocol_router(FakeSession(body=body))
    backend, attempts = await call(router, streaming)
    assert_recorded(router, backend, attempts, kind)


@pytest.mark.parametrize("body", list(BAD_BODIES))
async def test_an_answer_of_the_wrong_shape_is_malformed(body: str) -> None:
    router = protocol_router(FakeSession(body=BAD_BODIES[body]))
    backend, attempts = await call(router, streaming=False)
    assert_recorded(router, backend, attempts, FailureKind.malformed)


@pytest.mark.parametrize("stream", list(BAD_STREAMS))
async def test_a_stream_of_the_wrong_shape_fails_before_its_first_token(stream: str) -> None:
    router = protocol_router(FakeSession(body=BAD_STREAMS[stream]))
    backend, attempts = await call(router, streaming=True)
    assert_recorded(router, backend, attempts, STREAM_KIND.get(stream, FailureKind.malformed))


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", list(PROTOCOLS))
@pytest.mark.parametrize(
    ("family", "body", "kind"),
    [
        ("payload cut", aiohttp.ClientPayloadError("not completed"), FailureKind.stream_cut),
        ("not JSON", b"{ not json", FailureKind.malformed),
        ("wrong shape", WRONG_EVERYWHERE, FailureKind.malformed),
        ("a line over 1 MiB", b"{" + b"a" * (1024 * 1024 + 10), FailureKind.malformed),
        ("anything else", RuntimeError("parser bug"), FailureKind.malformed),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_every_protocol_reads_its_answer_inside_the_translation(
    api: str,
    family: str,
    body: bytes | BaseException,
    kind: FailureKind,
    streaming: bool,
) -> None:
    if family == "a line over 1 MiB" and not streaming:
        body = b'{"a": "' + b"x" * 100 + b'"'  # a plain answer has no lines: cut JSON instead
    elif streaming and api != "ollama" and isinstance(body, bytes) and family != "a line over 1 MiB":
        body = b"data: " + body + b"\n\n"  # Ollama streams NDJSON, the others SSE
    router = protocol_router(FakeSession(body=body), api)
    backend, attempts = await call(router, streaming)
    assert_recorded(router, backend, attempts, kind)


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("status", "kind"),
    [(302, FailureKind.malformed), (429, FailureKind.http_4xx), (503, FailureKind.http_5xx)],
)
async def test_a_status_is_classified_and_a_redirect_is_not_followed(
    status: int, kind: FailureKind, streaming: bool
) -> None:
    session = FakeSession(status=status, body=b'{"error": {"message": "no"}}')
    router = protocol_router(session)
    backend, attempts = await call(router, streaming)
    assert_recorded(router, backend, attempts, kind)
    assert attempts[0].reason.startswith(
        f"{kind.value}: HTTP {status} from http://m1.invalid/v1/chat/completions"
    )
    assert session.posts[0][1]["allow_redirects"] is False


# ---------------------------------------------------------------- credentials in the endpoint URL
async def test_url_credentials_beside_a_bearer_key_are_refused_with_the_fix() -> None:
    """aiohttp cannot send Basic credentials and ``Authorization: Bearer`` together: OpenAI's
    backend says so before any I/O, as it says that a key variable is unset."""
    session = FakeSession(body=b"{}")
    router = protocol_router(session, endpoint="https://proxy-user:proxy-pass-c4n4ry@m1.invalid/v1")
    backend, attempts = await call(router, streaming=False)
    assert backend == ANSWERING and session.posts == []
    assert attempts[0].status == "skipped"
    assert attempts[0].reason.startswith(f"the endpoint has credentials in its URL and {KEY_ENV} is set")
    assert "proxy-pass-c4n4ry" not in attempts[0].reason


@pytest.mark.parametrize("api", ["anthropic", "gemini", "ollama"])
async def test_url_credentials_travel_as_basic_auth_and_never_in_the_url(api: str) -> None:
    session = FakeSession(status=500, body=b'{"error": "down"}')
    router = protocol_router(session, api, "http://proxy-user:p%40ss-c4n4ry@m1.invalid/v1")
    backend, attempts = await call(router, streaming=False)
    assert backend == ANSWERING
    url, kwargs = session.posts[0]
    assert url.startswith("http://m1.invalid/v1") and "c4n4ry" not in url
    assert kwargs["headers"]["Authorization"] == aiohttp.encode_basic_auth("proxy-user", "p@ss-c4n4ry")
    assert "auth" not in kwargs
    assert attempts[0].kind is FailureKind.http_5xx
    assert "c4n4ry" not in attempts[0].reason and "proxy-user" not in attempts[0].reason


# ---------------------------------------------------------------- a backend that breaks its contract
class Raising:
    """A backend that raises something other than ``BackendError`` (a bug), quoting a secret."""

    name = FAILING
    request_model = "m1"

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def complete(self, request: ChatRequest) -> Completion:
        raise KeyError(f"choices (upstream said {KEY})")

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        raise TypeError(f"bad chunk {KEY}")
        yield TextDelta("never")


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
async def test_a_backend_raising_outside_its_contract_is_malformed_without_its_message(
    streaming: bool,
) -> None:
    router = router_over(make_config(), Raising())
    backend, attempts = await call(router, streaming)
    assert_recorded(router, backend, attempts, FailureKind.malformed)
    assert KEY not in json.dumps([a.to_dict() for a in attempts])
    assert "raised" in attempts[0].reason
