"""The gateway's answers in OpenAI's shapes: the completion body and the ``chat.completion.chunk``
events of a stream, with a wait (an engine restarting, a stack waking) as SSE comments.

The shapes are TypedDicts: plain dicts at run time (the hot path builds no model per answer),
checked by mypy where they are made. ``stackd.api.answer_models`` documents them for OpenAPI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from random import getrandbits
from typing import TYPE_CHECKING, Literal, TypedDict

from stackd.api.errors import error_answer
from stackd.api.raw_asgi import SSE_DONE, dumps, sse
from stackd.errors import StackdError
from stackd.router.engines import WAITING_EVERY_S
from stackd.router.types import (
    Answer,
    EngineWaiting,
    RouterStreamItem,
    StreamBroken,
    StreamDone,
    TextDelta,
    ToolCalls,
)
from stackd.schedule.wake import Waking

if TYPE_CHECKING:  # the slices package imports jsonschema: only its record's type is needed
    from stackd.router.slices.types import SlicedAnswerJson

OPENAI_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


class StackdRecord(TypedDict, total=False):
    """The completion's ``stackd`` object (clients ignore it): who answered, and how."""

    strategy: str
    backend: str
    backend_model: str
    cost_usd: float
    attempts: list[dict[str, object]]
    slices: SlicedAnswerJson  # a routed call's record
    wake: dict[str, object]  # how long the call waited for its stack to wake


class AssistantMessage(TypedDict, total=False):
    role: Literal["assistant"]
    content: str | None
    refusal: None
    tool_calls: list[dict[str, object]]


class CompletionChoice(TypedDict):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None


class ChatCompletion(TypedDict):
    """OpenAI's ``chat.completion`` object, plus ``stackd``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: dict[str, object]
    stackd: StackdRecord


class ChunkHead(TypedDict):
    """What every ``chat.completion.chunk`` of one stream repeats."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str


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
        self.trailer: dict[str, object] = {}
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


async def first_item(items: AsyncIterator[RouterStreamItem]) -> RouterStreamItem:
    """Pull the first item before any byte is sent: ``AllStrategiesFailed`` still becomes a 503."""
    return await anext(items)


def openai_finish_reason(reason: str) -> str:
    """One of OpenAI's five finish reasons: a backend's own word (Ollama's ``unload``, a server
    that invents one) would break a client that switches on them."""
    return reason if reason in OPENAI_FINISH_REASONS else "stop"


def indexed(calls: ToolCalls) -> list[dict[str, object]]:
    """``tool_calls`` as a stream's delta carries them: each with its ``index``."""
    return [{"index": i, **call} for i, call in enumerate(calls)]


def completion_body(answer: Answer, model: str, completion_id: str, created: int) -> ChatCompletion:
    message: AssistantMessage = {"role": "assistant", "content": answer.text, "refusal": None}
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


def finish_events(
    head: ChunkHead, answer: Answer, include_usage: bool, trailer: dict[str, object] | None
) -> Iterator[bytes]:
    """The end of a stream that answered: its tool calls as one delta, the finish chunk (with
    ``trailer`` as its ``stackd`` object), and the usage chunk when the caller asked for it."""
    finish = openai_finish_reason(answer.finish_reason)
    if answer.tool_calls:
        choice = {"index": 0, "delta": {"tool_calls": indexed(answer.tool_calls)}, "finish_reason": None}
        yield sse({**head, "choices": [choice]})
        finish = "tool_calls"
    last = {"index": 0, "delta": {}, "finish_reason": finish}
    yield sse(
        {**head, "choices": [last]} if trailer is None else {**head, "choices": [last], "stackd": trailer}
    )
    if include_usage:
        yield sse({**head, "choices": [], "usage": answer.usage.to_dict()})


def broken_event(item: StreamBroken) -> bytes:
    """A backend that failed after the first token: OpenAI's error object, naming it."""
    error = {
        "message": f"backend '{item.backend}' failed mid-stream: {item.reason}",
        "type": "server_error",
        "param": None,
        "code": "stream_broken",
        "backend": item.backend,
        "strategy": item.strategy,
    }
    return sse({"error": error})


def completion_id() -> str:
    """An answer's ``chatcmpl-`` id: unique, not a secret (``random``, not ``secrets``: a
    system call on every answer bought nothing an id needs)."""
    return f"chatcmpl-{getrandbits(96):024x}"


async def chat_chunks(
    first: RouterStreamItem,
    items: AsyncIterator[RouterStreamItem],
    model: str,
    include_usage: bool,
    trailer: dict[str, object] | None = None,
) -> AsyncIterator[bytes]:
    """OpenAI ``chat.completion.chunk`` events for the router's stream, ending with ``[DONE]``;
    ``trailer`` goes in the finish chunk as its ``stackd`` object (clients ignore the field)."""
    head: ChunkHead = {
        "id": completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    # A content chunk is the hot part of a stream: its bytes around the text are rendered once.
    choice = {"index": 0, "delta": {"content": "\x00"}, "finish_reason": None}
    before, after = sse({**head, "choices": [choice]}).split(dumps("\x00"))
    role: bytes | None = sse(
        {
            **head,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    )  # sent after a wait's comments, before the first token
    item: RouterStreamItem | None = first
    while item is not None:
        if isinstance(item, EngineWaiting):
            yield waiting_comment(item)
        elif role is not None:
            yield role
            role = None
        if isinstance(item, TextDelta):
            yield before + dumps(item.text) + after
        elif isinstance(item, StreamDone):
            for event in finish_events(head, item.answer, include_usage, trailer):
                yield event
            break
        elif isinstance(item, StreamBroken):
            yield broken_event(item)
            break
        try:
            item = await anext(items, None)
        except StackdError as exc:  # every strategy failed after a wait was announced: a 200 now
            yield b"data: " + error_answer(exc, "openai").json() + b"\n\n"
            break
    yield SSE_DONE
