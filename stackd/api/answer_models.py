"""The shapes of the answers the raw ASGI routes write, and of every error, for the OpenAPI document.

The gateway and the tools write bytes straight to ``send`` (see ``stackd.api.gateway``), so
FastAPI never sees what they answer. These models describe it: ``stackd.api.openapi_doc``
puts them in the schema, and the tests check real answers against that schema (schemathesis)
and the gateway's against OpenAI's own published one (tests/fixtures/openai/).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ErrorAnswer(BaseModel):
    """stackd's error: the kind, a sentence a person can act on, and what the kind adds (a 422
    lists ``problems``, a 503 its ``attempts``, a 404 the ``valid`` names)."""

    model_config = ConfigDict(title="Error")

    error: str = Field(description="The kind: NotFound, Conflict, Unauthorized, InvalidRequest, ...")
    message: str


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error or server_error.")
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """The gateway's errors have OpenAI's shape, so the official clients raise their own errors."""

    error: OpenAIErrorDetail


class TokenUsage(BaseModel):
    """``null``: the engine reported no count and none could be made (unknown, never a made-up 0)."""

    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    estimated: bool = Field(False, description="A figure is stackd's count, not the engine's report.")


class Attempt(BaseModel):
    """One strategy of the chain: what it did and why."""

    strategy: str
    backend: str | None
    status: Literal["skipped", "failed", "answered"]
    reason: str
    elapsed_ms: float


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = Field(description="Always null: stackd's backends do not refuse in-band.")


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = Field(description="Always null: stackd does not return log probabilities.")


class StackdTrace(BaseModel):
    """Which strategy and backend answered, at what cost, after which attempts."""

    strategy: str
    backend: str
    backend_model: str
    cost_usd: float
    attempts: list[Attempt]


class ChatCompletion(BaseModel):
    """``POST /v1/chat/completions`` without ``stream``: OpenAI's answer plus ``stackd``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: TokenUsage
    stackd: StackdTrace


class ListedModel(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    """``GET /v1/models``: the roles of the active stack, the presets and ``reason``."""

    object: Literal["list"]
    data: list[ListedModel]


class ToolAnswer(BaseModel):
    """A tool's answer: the text, and how stackd got it."""

    answer: str
    finish_reason: str
    strategy: str
    backend: str
    model: str
    usage: TokenUsage
    cost_usd: float
    attempts: list[Attempt]


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None


class ChatCompletionChunk(BaseModel):
    """One event of a streamed chat completion; with ``include_usage`` the last has ``usage``
    and no choices."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: TokenUsage | None = None


class ToolDelta(BaseModel):
    """A piece of a streamed tool answer's text."""

    delta: str


class ToolDone(BaseModel):
    """The last event of a streamed tool answer: the answer without its text."""

    done: Literal[True]
    finish_reason: str
    strategy: str
    backend: str
    model: str
    usage: TokenUsage
    cost_usd: float
    attempts: list[Attempt]


class ToolStreamErrorDetail(BaseModel):
    message: str


class ToolStreamError(BaseModel):
    """A streamed tool answer that failed after its first event (a backend cut, ``timeout_s``)."""

    error: ToolStreamErrorDetail


def sse_content(description: str, events: tuple[type[BaseModel], ...]) -> dict[str, object]:
    """A ``text/event-stream`` answer: each event's ``data`` is one of ``events`` as JSON, or the
    closing ``[DONE]`` (schemathesis checks every event against it)."""
    json_data = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"anyOf": [{"$ref": f"#/components/schemas/{event.__name__}"} for event in events]},
    }
    event = {
        "type": "object",
        "description": description,
        "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]}, "event": {"type": "string"}},
    }
    return {"text/event-stream": {"schema": event}}


CHAT_EVENTS = (ChatCompletionChunk, OpenAIError)
TOOL_EVENTS = (ToolDelta, ToolDone, ToolStreamError)
CHAT_STREAM = (
    "With `stream: true`: `chat.completion.chunk` events, then `data: [DONE]`. A backend that fails "
    "after the first token ends the stream with an error event in OpenAI's shape."
)
TOOL_STREAM = (
    'With `stream: true`: `{"delta": "..."}` events, then `{"done": true, ...}` (the answer without its '
    'text) or `{"error": {...}}`, then `data: [DONE]`.'
)
