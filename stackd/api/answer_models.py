"""The shapes of the answers the raw ASGI routes write, and of every error, for the OpenAPI document.

The gateway and the tools write bytes straight to ``send`` (see ``stackd.api.gateway``), so
FastAPI never sees what they answer. These models describe it: ``stackd.api.openapi_doc``
puts them in the schema, and the tests check real answers against that schema (schemathesis)
and the gateway's against OpenAI's own published one (tests/fixtures/openai/).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ErrorAnswer(BaseModel):
    """stackd's error: the kind, a sentence a person can act on, and what the kind adds (a 422
    lists ``problems``, a 503 its ``attempts``, a 404 the ``valid`` names)."""

    model_config = ConfigDict(extra="allow", title="Error")

    error: str = Field(description="The kind: NotFound, Conflict, Unauthorized, InvalidRequest, ...")
    message: str


class OpenAIErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str
    type: str = Field(description="invalid_request_error, authentication_error or server_error.")
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """The gateway's errors have OpenAI's shape, so the official clients raise their own errors."""

    error: OpenAIErrorDetail


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Attempt(BaseModel):
    """One strategy of the chain: what it did and why."""

    model_config = ConfigDict(extra="allow")

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


SSE_DESCRIPTION = {
    "chat": "With `stream: true`: `chat.completion.chunk` events (`data: {...}`), then `data: [DONE]`. A "
    'backend that fails after the first token ends the stream with `data: {"error": {...}}`.',
    "tool": 'With `stream: true`: `data: {"delta": "..."}` events, then `data: {"done": true, ...}` '
    '(the answer without its text) or `data: {"error": {...}}`, then `data: [DONE]`.',
}


def sse_content(kind: str) -> dict[str, Any]:
    return {"text/event-stream": {"schema": {"type": "string", "description": SSE_DESCRIPTION[kind]}}}
