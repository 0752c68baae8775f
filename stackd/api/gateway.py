"""The OpenAI-compatible gateway: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``model`` is a role bound in the active stack, a preset (``elastic:9b``) or ``reason`` /
``reason:effort=N``. Answers, SSE chunks and errors have OpenAI's shapes, so the official
clients work unchanged; the non-streaming answer adds a ``stackd`` object (strategy, backend,
attempts) that those clients ignore.

The POST is a raw ASGI endpoint mounted as a Starlette route, not a FastAPI path operation:
FastAPI's per-request dependency and response machinery costs about 40% of this hot path on
2 cores (research/physical-floor.md, docs/benchmarks.md). It validates with pydantic straight
from the body bytes and writes bytes with ``send``. The same plumbing serves ``/tools/*``.

Streaming: nothing is sent before the router has a first token, so a call whose every
strategy fails still gets a proper HTTP 503; after the first token a failure ends the stream
with ``data: {"error": {...}}`` naming the backend, then ``data: [DONE]``. One exception: a
call that waits for a restarting engine opens the stream at once with SSE comments every few
seconds (``: stackd: waiting up to 30 s for smollm2-135m: engine smollm2-135m killed by SIGKILL,
restart 1/3 in progress``), which clients skip; if it fails after that, the 503's error object
comes as ``data: {"error": {...}}``, then ``data: [DONE]``. A call that waits for its stack to
wake (``stackd.schedule.wake``) is told the same way (``: stackd: waiting up to 120 s for vision:
stack 'cloud-offload' is waking (switch 3f2a…)``), and its finish chunk says how long it waited
(``stackd.wake``); a wake past its bound ends the stream with the 503's error object.

The answer's contract (``response_format``, ``tools``, ``tool_choice``) goes to the backend,
which forwards it to its engine or is skipped saying it cannot (a route where no backend can is
a 400 ``unsupported_parameter``). An engine's ``tool_calls`` come back as OpenAI's.

A routed stream (a preset with ``routing``) is buffer-then-stream: the slices' answers are
validated before the first byte, then the validated text goes out as one content chunk (a valid
tool call as one ``tool_calls`` delta), and the finish chunk carries ``stackd.slices``, the same
record as a non-streamed answer's (slice, model digest, policy version, validated, tries).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from stackd.api.errors import Shape, error_answer, invalid_request_message, problem
from stackd.errors import StackdError
from stackd.gpu.calls import CallLeases
from stackd.router import ReasonRouter
from stackd.router.engines import WAITING_EVERY_S
from stackd.router.routes import Route as ChainRoute
from stackd.router.slices import SlicedAnswer, SliceRequest, SliceRouter
from stackd.router.types import (
    Answer,
    ChatRequest,
    EngineWaiting,
    RouterStreamItem,
    StreamBroken,
    StreamDone,
    TextDelta,
    ToolCalls,
)
from stackd.schedule.wake import Waker, Waking

Auth = Callable[..., Any]
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
SSE_DONE = b"data: [DONE]\n\n"
OPENAI_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
MAX_TOKENS = 2**31 - 1  # the largest max_tokens accepted; a backend refuses what its context cannot hold
REASONING_EFFORT = {"low": 3, "medium": 6, "high": 9}  # OpenAI's words on stackd's 1-10 effort scale


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def a_number(value: Any) -> Any:
    """Refuse what lax int would turn into a number: the string ``"100"``, ``true``."""
    if isinstance(value, str | bool):
        raise ValueError("Input should be a valid integer")
    return value


# An integer as JSON Schema has it: 100 or 100.0, never "100", 100.5 or true. The bounds sit before
# the validator, where the JSON Schema shows them as minimum/maximum, in an Optional too.
TokenCount = Annotated[int, Strict(False), Field(ge=1, le=MAX_TOKENS), BeforeValidator(a_number)]
ChunkCount = Annotated[int, Strict(False), Field(ge=0, le=10_000), BeforeValidator(a_number)]


class RequestRejected(StackdError):
    """A request body that fails validation (422)."""

    status = 422


# ---------------------------------------------------------------- raw ASGI plumbing (also used by tools)
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


def sse(value: Any) -> bytes:
    return b"data: " + dumps(value) + b"\n\n"


def waiting_comment(item: EngineWaiting) -> bytes:
    """A wait for a restarting engine as an SSE comment: every SSE client skips a comment
    (OpenAI's SDK among them), a person reading the stream sees what is happening, and the
    connection does not look idle to a proxy."""
    text = f"stackd: waiting up to {item.wait_s:.0f} s for {item.backend}: {item.reason}"
    return b": " + " ".join(text.splitlines()).encode() + b"\n\n"


class WakeStream:
    """A call's stream behind a wake: an ``EngineWaiting`` at once and every ``WAITING_EVERY_S``
    while its stack wakes (the loading indication an engine restart gives, so the writers turn it
    into the same SSE comment), then the items of ``stream()``, which resolves the call's route
    against the stack that woke. ``trailer["wake"]`` says how long it waited once it is up; a
    wake past its bound, or failed, raises its ``StackdError`` from ``__anext__``, which the
    writers send as the stream's error event."""

    def __init__(
        self, waking: Waking, name: str, stream: Callable[[], AsyncIterator[RouterStreamItem]]
    ) -> None:
        self.trailer: dict[str, Any] = {}
        self._items = self._run(waking, name, stream)

    def __aiter__(self) -> WakeStream:
        return self

    async def __anext__(self) -> RouterStreamItem:
        return await anext(self._items)

    async def _run(
        self, waking: Waking, name: str, stream: Callable[[], AsyncIterator[RouterStreamItem]]
    ) -> AsyncIterator[RouterStreamItem]:
        while True:
            yield EngineWaiting("wake", name, waking.doing(), waking.left_s())
            woken = await waking.wait(WAITING_EVERY_S)
            if woken is not None:
                break
        self.trailer["wake"] = woken.to_dict()
        async for item in stream():
            yield item


def validate(model: type[BaseModel], body: bytes) -> Any:
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


async def first_item(items: AsyncIterator[RouterStreamItem]) -> RouterStreamItem:
    """Pull the first item before any byte is sent: ``AllStrategiesFailed`` still becomes a 503."""
    return await anext(items)


async def until_disconnect(
    handle: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive, send: Send
) -> None:
    """Run ``handle``; when the client goes away first, cancel it at once.

    Cancelling closes the backend's connection, so an engine stops generating for a caller that
    left (a disconnected SSE reader, a Ctrl-C in ``stackd reason``, a client's own timeout)
    instead of spending its single slot on an answer nobody reads. Once the request body has
    been read, the next ASGI message can only be ``http.disconnect``: one watcher task waits for
    it from then on and cancels this task. ``handle`` runs in this task (no second task, no
    ``wait``/``gather``: each costs event-loop turns on the hot path)."""
    this = asyncio.current_task()
    assert this is not None
    watcher: asyncio.Future[None] | None = None
    gone = False

    async def client_gone() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        this.cancel()

    async def receive_body() -> Message:
        nonlocal watcher
        message = await receive()
        if watcher is None and (message["type"] != "http.request" or not message.get("more_body")):
            watcher = asyncio.ensure_future(client_gone())
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
        if watcher is not None:
            watcher.cancel()


class RawEndpoint:
    """An ASGI app for one POST route: ``handle(scope, receive, send)`` does the work; every
    ``StackdError`` becomes the error table's answer in ``shape`` (``stackd.api.errors``)."""

    def __init__(
        self, auth: Auth, handle: Callable[[Scope, Receive, Send], Awaitable[None]], shape: Shape
    ) -> None:
        self._auth = auth
        self._handle = handle
        self._shape: Shape = shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await authorize(self._auth, scope, receive)
            await until_disconnect(self._handle, scope, receive, send)
        except StackdError as exc:
            answer = error_answer(exc, self._shape)
            await send_bytes(send, answer.status, answer.json(), answer.raw_headers())


# ---------------------------------------------------------------- the gateway
class ChatCompletionBody(BaseModel):
    """The OpenAI chat request fields the gateway uses; other OpenAI fields are accepted and ignored.
    Strict, as OpenAI is: ``"0.5"`` or ``false`` is not a temperature, ``0`` is not a ``stream``."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(examples=["reason"], description="A role of the active stack, a preset or 'reason'.")
    messages: list[dict[str, Any]] = Field(min_length=1, examples=[[{"role": "user", "content": "Hello"}]])
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # As OpenAI validates them: a JSON integer (not "100", not 100.5, not true; 100.0 is one, as
    # JSON Schema says), at least 1, within a signed 32-bit int (10^30 is refused, not passed on).
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    # The answer's contract: forwarded to the engine (docs/router.md), and read by slice routing.
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = Field(None, max_length=256, description="The caller; routing may pin it to a slice.")
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    retrieved_chunks: ChunkCount | None = Field(None, description="Chunks retrieved into the prompt.")

    def slice_request(self) -> SliceRequest:
        effort = REASONING_EFFORT[self.reasoning_effort] if self.reasoning_effort else None
        return SliceRequest(
            self.to_request(),
            self.response_format,
            self.tools,
            self.tool_choice,
            self.retrieved_chunks or 0,
            effort,
            self.user,
        )

    def to_request(self) -> ChatRequest:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return ChatRequest(
            self.messages,
            self.max_completion_tokens or self.max_tokens,
            self.temperature,
            self.top_p,
            stop,
            self.response_format,
            self.tools,
            self.tool_choice,
        )


def openai_finish_reason(reason: str) -> str:
    """One of OpenAI's five finish reasons: a backend's own word (Ollama's ``unload``, a server
    that invents one) would break a client that switches on them."""
    return reason if reason in OPENAI_FINISH_REASONS else "stop"


def indexed(calls: ToolCalls) -> list[dict[str, Any]]:
    """``tool_calls`` as a stream's delta carries them: each with its ``index``."""
    return [{"index": i, **call} for i, call in enumerate(calls)]


def completion_body(answer: Answer, model: str, completion_id: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
    finish = openai_finish_reason(answer.finish_reason)
    if answer.tool_calls:
        message = {**message, "content": answer.text or None, "tool_calls": list(answer.tool_calls)}
        finish = "tool_calls"
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": answer.usage.to_dict(),
        "stackd": {
            "strategy": answer.strategy,
            "backend": answer.backend,
            "backend_model": answer.model,
            "cost_usd": answer.cost_usd,
            "attempts": [a.to_dict() for a in answer.attempts],
        },
    }


async def chat_chunks(
    first: RouterStreamItem,
    items: AsyncIterator[RouterStreamItem],
    model: str,
    include_usage: bool,
    trailer: dict[str, Any] | None = None,
) -> AsyncIterator[bytes]:
    """OpenAI ``chat.completion.chunk`` events for the router's stream, ending with ``[DONE]``;
    ``trailer`` goes in the finish chunk as its ``stackd`` object (clients ignore the field)."""
    base = {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    # A content chunk is the hot part of a stream: its bytes around the text are rendered once.
    head, tail = chunk({"content": "\x00"}).split(dumps("\x00"))
    role: bytes | None = chunk({"role": "assistant", "content": ""})  # after a wait's comments
    item: RouterStreamItem | None = first
    while item is not None:
        if isinstance(item, EngineWaiting):
            yield waiting_comment(item)
        elif role is not None:
            yield role
            role = None
        if isinstance(item, TextDelta):
            yield head + dumps(item.text) + tail
        elif isinstance(item, StreamDone):
            finish = openai_finish_reason(item.answer.finish_reason)
            if item.answer.tool_calls:
                yield chunk({"tool_calls": indexed(item.answer.tool_calls)})
                finish = "tool_calls"
            if trailer is None:
                yield chunk({}, finish)
            else:
                yield sse(
                    {
                        **base,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                        "stackd": trailer,
                    }
                )
            if include_usage:
                yield sse({**base, "choices": [], "usage": item.answer.usage.to_dict()})
            break
        elif isinstance(item, StreamBroken):
            yield sse(
                {
                    "error": {
                        "message": f"backend '{item.backend}' failed mid-stream: {item.reason}",
                        "type": "server_error",
                        "param": None,
                        "code": "stream_broken",
                        "backend": item.backend,
                        "strategy": item.strategy,
                    }
                }
            )
            break
        try:
            item = await anext(items, None)
        except StackdError as exc:  # every strategy failed after a wait was announced: a 200 now
            yield b"data: " + error_answer(exc, "openai").json() + b"\n\n"
            break
    yield SSE_DONE


def routed_answer(sliced: SlicedAnswer) -> Answer:
    """The answer of a routed call as the caller gets it: a valid tool call (checked against its
    tool's parameters) is OpenAI's ``tool_calls``, its text no longer the content."""
    if sliced.tool_call is None:
        return sliced.answer
    call = {
        "id": f"call_{secrets.token_hex(8)}",
        "type": "function",
        "function": {"name": sliced.tool_call.name, "arguments": json.dumps(sliced.tool_call.arguments)},
    }
    return replace(sliced.answer, text="", finish_reason="tool_calls", tool_calls=(call,))


def sliced_body(sliced: SlicedAnswer, model: str) -> dict[str, Any]:
    """The completion of a routed call; ``stackd.slices`` says which slice served, with which
    weights and policy, and why each slice tried was left."""
    answer = routed_answer(sliced)
    payload = completion_body(answer, model, f"chatcmpl-{secrets.token_hex(12)}", int(time.time()))
    payload["stackd"]["slices"] = sliced.to_dict()
    return payload


async def sliced_items(answer: Answer) -> AsyncIterator[RouterStreamItem]:
    yield StreamDone(answer)


class ChatCompletions:
    def __init__(
        self,
        router: ReasonRouter,
        slices: SliceRouter | None = None,
        holds: CallLeases | None = None,
        waker: Waker | None = None,
    ) -> None:
        self._router = router
        self._slices = slices
        self._holds = holds  # a model on an on-demand GPU member is called under a lease
        self._waker = waker  # a model only the held or scheduled stack has wakes that stack first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body: ChatCompletionBody = validate(ChatCompletionBody, await read_body(receive))
        routed = self._slices.routed(body.model) if self._slices is not None else None
        if routed is not None and self._slices is not None:
            # Buffer-then-stream: validated before a byte is sent, then the whole answer in one
            # chunk, and the finish chunk carries the routing record a non-streamed answer has.
            sliced = await self._slices.complete(routed[0], routed[1], body.slice_request())
            if not body.stream:
                await send_bytes(send, 200, dumps(sliced_body(sliced, body.model)))
                return
            answer = routed_answer(sliced)
            first: RouterStreamItem = TextDelta(answer.text) if answer.text else StreamDone(answer)
            usage = bool(body.stream_options and body.stream_options.get("include_usage"))
            record = {"slices": sliced.to_dict()}
            await send_sse(send, chat_chunks(first, sliced_items(answer), body.model, usage, record))
            return
        # Before the route is resolved: it is resolved against the stack the wake brought up.
        waking = self._waker.begin(body.model) if self._waker is not None else None
        include_usage = bool(body.stream_options and body.stream_options.get("include_usage"))
        if waking is not None and body.stream:
            # The stream opens at once and says the call waits, as an engine restart's wait does.
            woken_items = WakeStream(waking, body.model, lambda: self._stream(body))
            first = await first_item(woken_items)
            trailer = woken_items.trailer  # filled in when the stack is up, before the finish chunk
            await send_sse(send, chat_chunks(first, woken_items, body.model, include_usage, trailer))
            return
        woken = await waking.wait() if waking is not None else None
        if body.stream:
            items = self._stream(body)
            first = await first_item(items)
            await send_sse(send, chat_chunks(first, items, body.model, include_usage))
            return
        route: ChainRoute = self._router.gateway_route(body.model)
        request = body.to_request()
        if self._holds is not None:
            answer = await self._holds.complete(route, lambda: self._router.complete(route, request))
        else:
            answer = await self._router.complete(route, request)
        payload = completion_body(answer, body.model, f"chatcmpl-{secrets.token_hex(12)}", int(time.time()))
        if woken is not None:  # the answer says it waited for a stack to wake, and how long
            payload["stackd"] = {**payload.get("stackd", {}), "wake": woken.to_dict()}
        await send_bytes(send, 200, dumps(payload))

    def _stream(self, body: ChatCompletionBody) -> AsyncIterator[RouterStreamItem]:
        """The router's stream for ``body``, its route resolved now (after any wake)."""
        route = self._router.gateway_route(body.model)
        request = body.to_request()
        if self._holds is not None:
            return self._holds.stream(route, lambda: self._router.stream(route, request))
        return self._router.stream(route, request)


def build_gateway_router(
    router: ReasonRouter,
    auth: Auth,
    slices: SliceRouter | None = None,
    holds: CallLeases | None = None,
    waker: Waker | None = None,
) -> APIRouter:
    """``GET /v1/models`` and ``POST /v1/chat/completions`` as raw ASGI routes (OpenAI error shape,
    auth errors included); ``auth`` is the app's dependency, called with the ``Request``."""
    api = APIRouter()

    async def list_models(scope: Scope, receive: Receive, send: Send) -> None:
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "stackd"}
            for name in router.gateway_models()
        ]
        await send_bytes(send, 200, dumps({"object": "list", "data": data}))

    models = RawEndpoint(auth, list_models, "openai")
    api.routes.append(Route("/v1/models", models, methods=["GET"], name="list_models"))
    endpoint = RawEndpoint(auth, ChatCompletions(router, slices, holds, waker), "openai")
    api.routes.append(Route("/v1/chat/completions", endpoint, methods=["POST"], name="chat_completions"))
    return api
