"""The OpenAI-compatible gateway: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``model`` is a role bound in the active stack, a preset (``elastic:9b``) or ``reason`` /
``reason:effort=N``. Answers, SSE chunks and errors have OpenAI's shapes, so the official
clients work unchanged; the non-streaming answer adds a ``stackd`` object (strategy, backend,
attempts) that those clients ignore.

The POST is a raw ASGI endpoint mounted as a Starlette route, not a FastAPI path operation:
FastAPI's per-request dependency and response machinery costs about 40% of this hot path on
2 cores (research/physical-floor.md, docs/benchmarks.md). It validates with pydantic straight
from the body bytes and writes bytes with ``send`` (``stackd.api.raw_asgi``, which ``/tools/*`` share);
the answer's shapes, streamed or not, are ``stackd.api.chat_stream``'s.

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

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict
from starlette.routing import Route
from starlette.types import Scope, Send

from stackd.api.auth import CALLER_KEY
from stackd.api.chat_stream import (
    ChatCompletion,
    WakeStream,
    chat_chunks,
    completion_body,
    completion_id,
    first_item,
)
from stackd.api.keyring import Caller
from stackd.api.raw_asgi import Auth, RawEndpoint, dumps, send_bytes, send_sse, validate
from stackd.gpu.calls import CallLeases
from stackd.router import ReasonRouter
from stackd.router.routes import Route as ChainRoute
from stackd.router.slices import SlicedAnswer, SliceRequest, SliceRouter
from stackd.router.types import Answer, ChatRequest, RouterStreamItem, StreamDone, TextDelta
from stackd.schedule.wake import Waker

MAX_TOKENS = 2**31 - 1  # the largest max_tokens accepted; a backend refuses what its context cannot hold
REASONING_EFFORT = {"low": 3, "medium": 6, "high": 9}  # OpenAI's words on stackd's 1-10 effort scale


def a_number(value: object) -> object:
    """Refuse what lax int would turn into a number: the string ``"100"``, ``true``."""
    if isinstance(value, str | bool):
        raise ValueError("Input should be a valid integer")
    return value


# An integer as JSON Schema has it: 100 or 100.0, never "100", 100.5 or true. The bounds sit before
# the validator, where the JSON Schema shows them as minimum/maximum, in an Optional too.
TokenCount = Annotated[int, Strict(False), Field(ge=1, le=MAX_TOKENS), BeforeValidator(a_number)]
ChunkCount = Annotated[int, Strict(False), Field(ge=0, le=10_000), BeforeValidator(a_number)]


class ChatCompletionBody(BaseModel):
    """The OpenAI chat request fields the gateway uses; other OpenAI fields are accepted and ignored.
    Strict, as OpenAI is: ``"0.5"`` or ``false`` is not a temperature, ``0`` is not a ``stream``."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(examples=["reason"], description="A role of the active stack, a preset or 'reason'.")
    messages: list[dict[str, object]] = Field(min_length=1, examples=[[{"role": "user", "content": "Hello"}]])
    stream: bool = False
    stream_options: dict[str, object] | None = None
    # As OpenAI validates them: a JSON integer (not "100", not 100.5, not true; 100.0 is one, as
    # JSON Schema says), at least 1, within a signed 32-bit int (10^30 is refused, not passed on).
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    # The answer's contract: forwarded to the engine (docs/router.md), and read by slice routing.
    response_format: dict[str, object] | None = None
    tools: list[dict[str, object]] | None = None
    tool_choice: str | dict[str, object] | None = None
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


def routed_answer(sliced: SlicedAnswer) -> Answer:
    """The answer of a routed call as the caller gets it: a valid tool call (checked against its
    tool's parameters) is OpenAI's ``tool_calls``, its text no longer the content."""
    if sliced.tool_call is None:
        return sliced.answer
    call: dict[str, object] = {
        "id": f"call_{secrets.token_hex(8)}",
        "type": "function",
        "function": {"name": sliced.tool_call.name, "arguments": json.dumps(sliced.tool_call.arguments)},
    }
    return replace(sliced.answer, text="", finish_reason="tool_calls", tool_calls=(call,))


def sliced_body(sliced: SlicedAnswer, model: str) -> ChatCompletion:
    """The completion of a routed call; ``stackd.slices`` says which slice served, with which
    weights and policy, and why each slice tried was left."""
    answer = routed_answer(sliced)
    payload = completion_body(answer, model, completion_id(), int(time.time()))
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

    async def __call__(self, scope: Scope, raw: bytes, send: Send) -> None:
        body: ChatCompletionBody = validate(ChatCompletionBody, raw)
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
            record: dict[str, object] = {"slices": sliced.to_dict()}
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
        if self._holds is not None and self._holds.model_of(route) is not None:
            answer = await self._holds.complete(route, lambda: self._router.complete(route, request))
        else:  # most calls: no lease to take, no wrapper to pass through
            answer = await self._router.complete(route, request)
        payload = completion_body(answer, body.model, completion_id(), int(time.time()))
        if woken is not None:  # the answer says it waited for a stack to wake, and how long
            payload["stackd"]["wake"] = woken.to_dict()
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

    async def list_models(scope: Scope, body: bytes, send: Send) -> None:
        # A key limited to some models lists only those (the same names its chat is checked
        # against); the bootstrap token, an unrestricted key or an open loopback read lists all.
        caller = scope.get(CALLER_KEY)
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "stackd"}
            for name in router.gateway_models()
            if not isinstance(caller, Caller) or caller.may_use(name)
        ]
        await send_bytes(send, 200, dumps({"object": "list", "data": data}))

    models = RawEndpoint(auth, list_models, "openai")
    api.routes.append(Route("/v1/models", models, methods=["GET"], name="list_models"))
    endpoint = RawEndpoint(auth, ChatCompletions(router, slices, holds, waker), "openai")
    api.routes.append(Route("/v1/chat/completions", endpoint, methods=["POST"], name="chat_completions"))
    return api
