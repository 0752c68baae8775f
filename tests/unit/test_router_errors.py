"""Every exception family a backend's wire or parser can raise is a classified, recorded failure.

The failing backend is a real protocol backend (OpenAI unless said otherwise) whose HTTP client
is a stand-in that raises one exception, before the response head (the request could not be
made) or while the body is read; the next strategy is a scripted backend that answers. For each
family: the call is answered by the next strategy, the failed attempt carries its
``FailureKind``, the circuit of the failing backend counted it with the same reason, and the
accounting counted it by kind. Nothing else escapes: a backend that raises something other
than ``BackendError`` is recorded as ``malformed`` too, without its message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from stackd.config.models import StacksConfig
from stackd.config.secrets import Secrets
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.backends.anthropic import AnthropicBackend
from stackd.router.backends.base import Backend
from stackd.router.backends.gemini import GeminiBackend
from stackd.router.backends.ollama import OllamaBackend
from stackd.router.backends.openai import OpenAIBackend
from stackd.router.http_client import (
    BadAnswer,
    BadHeader,
    ConnectFailed,
    ConnectTimedOut,
    Disconnected,
    HttpClient,
    InvalidUrl,
)
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


# ---------------------------------------------------------------- a client that fails as told
class FakeAnswer:
    """Stands in for ``HttpAnswer``: its body is bytes, or an exception raised when it is read."""

    def __init__(self, status: int, body: bytes | BaseException) -> None:
        self.status = status
        self.headers: dict[str, str] = {}
        self.content_length = None
        self._body = body

    def _bytes(self) -> bytes:
        if isinstance(self._body, BaseException):
            raise self._body
        body, self._body = self._body, b""
        return body

    async def read(self) -> bytes:
        return self._bytes()

    async def read_some(self, limit: int) -> bytes:
        return self._bytes()

    async def chunks(self) -> AsyncIterator[bytes]:
        body = self._bytes()
        if body:
            yield body


class FakeClient:
    """Stands in for ``HttpClient``: ``post`` raises ``before_head`` on entering, or answers
    ``status`` with ``body`` (bytes, or an exception raised when the body is read)."""

    def __init__(
        self, before_head: BaseException | None = None, status: int = 200, body: bytes | BaseException = b""
    ) -> None:
        self.before_head = before_head
        self.status = status
        self.body = body
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    @asynccontextmanager
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AsyncIterator[FakeAnswer]:
        self.posts.append((url, body, dict(headers)))
        if self.before_head is not None:
            raise self.before_head
        yield FakeAnswer(self.status, self.body)


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

    def factory(name: str, client: HttpClient) -> Backend | None:
        return failing if name == FAILING else Answering()

    return ReasonRouter(config, LiveRoles(table), backend_factory=factory)


def protocol_router(client: FakeClient, api: str = "openai", endpoint: str | None = None) -> ReasonRouter:
    config = make_config(api, endpoint or "http://m1.invalid/v1")
    secrets = Secrets({KEY_ENV: KEY})  # the daemon's Secrets, as a dict: no process-wide variable
    backend = PROTOCOLS[api](config.models[FAILING], client, Redactor.for_config(config, secrets))
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


# What the client raises before there is a response head: the request never became an answer.
BEFORE_HEAD: dict[str, tuple[BaseException, FailureKind]] = {
    "InvalidUrl": (InvalidUrl("not an http(s) URL: ftp://m1.invalid/v1"), FailureKind.refused),
    "BadHeader": (BadHeader("header 'X' holds a line break"), FailureKind.refused),
    "ValueError": (ValueError("a value the request cannot carry"), FailureKind.refused),
    "UnicodeEncodeError (a header that cannot be encoded)": (
        UnicodeEncodeError("latin-1", "ключ", 0, 4, "ordinal not in range(256)"),
        FailureKind.refused,
    ),
    "ConnectFailed (refused)": (ConnectFailed("Connection refused"), FailureKind.refused),
    "ConnectFailed (DNS)": (ConnectFailed("Name or service not known"), FailureKind.refused),
    "ConnectFailed (TLS)": (ConnectFailed("certificate verify failed"), FailureKind.refused),
    "Disconnected (closed before the head)": (Disconnected("closed"), FailureKind.refused),
    "ConnectionResetError": (ConnectionResetError(104, "Connection reset by peer"), FailureKind.refused),
    "ConnectTimedOut": (ConnectTimedOut("connect timed out after 1 s"), FailureKind.timeout),
    "BadAnswer (bad status line)": (
        BadAnswer("not an HTTP/1.1 answer (invalid status)"),
        FailureKind.malformed,
    ),
    "BadAnswer (a head over its limit)": (BadAnswer("an answer's head over 64 KiB"), FailureKind.malformed),
    "RuntimeError (anything else)": (RuntimeError("something unexpected"), FailureKind.refused),
}

# What the body's reading or parsing raises once the head has arrived.
AFTER_HEAD: dict[str, tuple[bytes | BaseException, FailureKind]] = {
    "Disconnected": (Disconnected("the connection closed before the answer ended"), FailureKind.stream_cut),
    "ConnectionResetError": (ConnectionResetError(104, "Connection reset by peer"), FailureKind.stream_cut),
    "TimeoutError": (TimeoutError("read timed out"), FailureKind.timeout),
    "BadAnswer (bad chunk size)": (
        BadAnswer("not an HTTP/1.1 answer (invalid chunk size)"),
        FailureKind.malformed,
    ),
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
    router = protocol_router(FakeClient(before_head=exc))
    backend, attempts = await call(router, streaming)
    assert_recorded(router, backend, attempts, kind)


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("family", list(AFTER_HEAD))
async def test_a_failure_while_the_body_is_read_is_recorded_and_the_next_strategy_answers(
    family: str, streaming: bool
) -> None:
    body, kind = AFTER_HEAD[family]
    router = protocol_router(FakeClient(body=body))
    backend, attempts = await call(router, streaming)
    assert_recorded(router, backend, attempts, kind)


@pytest.mark.parametrize("body", list(BAD_BODIES))
async def test_an_answer_of_the_wrong_shape_is_malformed(body: str) -> None:
    router = protocol_router(FakeClient(body=BAD_BODIES[body]))
    backend, attempts = await call(router, streaming=False)
    assert_recorded(router, backend, attempts, FailureKind.malformed)


@pytest.mark.parametrize("stream", list(BAD_STREAMS))
async def test_a_stream_of_the_wrong_shape_fails_before_its_first_token(stream: str) -> None:
    router = protocol_router(FakeClient(body=BAD_STREAMS[stream]))
    backend, attempts = await call(router, streaming=True)
    assert_recorded(router, backend, attempts, STREAM_KIND.get(stream, FailureKind.malformed))


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", list(PROTOCOLS))
@pytest.mark.parametrize(
    ("family", "body", "kind"),
    [
        ("payload cut", Disconnected("closed mid-answer"), FailureKind.stream_cut),
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
    router = protocol_router(FakeClient(body=body), api)
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
    client = FakeClient(status=status, body=b'{"error": {"message": "no"}}')
    router = protocol_router(client)
    backend, attempts = await call(router, streaming)
    assert_recorded(router, backend, attempts, kind)
    assert attempts[0].reason.startswith(
        f"{kind.value}: HTTP {status} from http://m1.invalid/v1/chat/completions"
    )


# ---------------------------------------------------------------- credentials in the endpoint URL
async def test_url_credentials_beside_a_bearer_key_are_refused_with_the_fix() -> None:
    """One request cannot carry Basic credentials and ``Authorization: Bearer`` together: OpenAI's
    backend says so before any I/O, as it says that a key variable is unset."""
    client = FakeClient(body=b"{}")
    router = protocol_router(client, endpoint="https://proxy-user:proxy-pass-c4n4ry@m1.invalid/v1")
    backend, attempts = await call(router, streaming=False)
    assert backend == ANSWERING and client.posts == []
    assert attempts[0].status == "skipped"
    assert attempts[0].reason.startswith(f"the endpoint has credentials in its URL and {KEY_ENV} is set")
    assert "proxy-pass-c4n4ry" not in attempts[0].reason


@pytest.mark.parametrize("api", ["anthropic", "gemini", "ollama"])
async def test_url_credentials_travel_as_basic_auth_and_never_in_the_url(api: str) -> None:
    client = FakeClient(status=500, body=b'{"error": "down"}')
    router = protocol_router(client, api, "http://proxy-user:p%40ss-c4n4ry@m1.invalid/v1")
    backend, attempts = await call(router, streaming=False)
    assert backend == ANSWERING
    url, _, headers = client.posts[0]
    assert url.startswith("http://m1.invalid/v1") and "c4n4ry" not in url
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"proxy-user:p@ss-c4n4ry").decode()
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
