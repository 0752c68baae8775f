"""Values of the router: what a backend is asked, what it answers, and what an attempt was.

Every backend protocol (OpenAI, Anthropic, Gemini, Ollama) is normalised to these shapes, so
the chain, the accounting and the API never look at a protocol's own JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class FailureKind(StrEnum):
    """Why an attempt failed; the accounting counts failures by these kinds."""

    refused = "refused"  # no TCP connection (nothing listens, DNS, reset before an answer)
    timeout = "timeout"  # connect, first-token or total timeout
    http_5xx = "http_5xx"
    http_4xx = "http_4xx"
    malformed = "malformed"  # an answer that is not the protocol's shape
    stream_cut = "stream_cut"  # the stream ended before the protocol's end marker
    empty = "empty"  # a proper answer with no text in it (blank, or whitespace only)


class BackendError(Exception):
    """A backend failed one request. ``str()`` is safe to show: it never carries a key."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens of one answer. ``None`` is a count nobody could make (the engine reported none
    and has no tokenizer stackd can ask): unknown, never a made-up 0. ``estimated``: a figure
    here is stackd's count (the engine's tokenizer on the messages' text, one token per streamed
    chunk), not the engine's own report."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated: bool = False

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens

    @property
    def counted_tokens(self) -> int:
        """The tokens known to have been spent (budgets, cost): the unknown parts count 0."""
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)

    @property
    def unknown(self) -> bool:
        return self.prompt_tokens is None or self.completion_tokens is None

    def to_dict(self) -> dict[str, object]:
        """OpenAI's usage object; ``estimated`` added only when a figure is stackd's count."""
        out: dict[str, object] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.estimated:
            out["estimated"] = True
        return out


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat request in OpenAI's vocabulary; backends translate it to their protocol.

    ``messages`` are OpenAI chat messages (role, content as text or a list of parts).
    ``response_format``, ``tools`` and ``tool_choice`` are the answer's contract, as OpenAI spells
    them: a backend forwards them in its protocol's words (an engine that constrains decoding
    then produces what was asked), or says through ``Backend.unsupported`` that it cannot.
    """

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


ToolCalls = tuple[dict[str, object], ...]
"""OpenAI ``tool_calls``: ``{"id", "type": "function", "function": {"name", "arguments"}}``, with
``arguments`` a JSON string as OpenAI sends it."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A backend's whole answer."""

    text: str
    finish_reason: str
    usage: Usage
    tool_calls: ToolCalls = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of streamed text (never empty)."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamFinish:
    """The last event of a backend stream that ended properly; ``tool_calls`` are whole (a
    backend assembles the stream's pieces of each call)."""

    finish_reason: str
    usage: Usage
    tool_calls: ToolCalls = ()


StreamEvent = TextDelta | StreamFinish

AttemptStatus = Literal["skipped", "failed", "answered"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One step of a call's route: what was tried, what happened and why."""

    strategy: str
    backend: str | None  # the config model name; None when the strategy resolved to no model
    status: AttemptStatus
    reason: str
    elapsed_ms: float = 0.0
    kind: FailureKind | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "backend": self.backend,
            "status": self.status,
            "reason": self.reason,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """The result of reason(), invoke_model() or a gateway call that answered."""

    text: str
    finish_reason: str
    strategy: str
    backend: str  # config model name
    model: str  # the model name sent to the backend
    usage: Usage
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)
    cost_usd: float = 0.0
    tool_calls: ToolCalls = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "answer": self.text,
            "finish_reason": self.finish_reason,
            "strategy": self.strategy,
            "backend": self.backend,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "attempts": [a.to_dict() for a in self.attempts],
        }


@dataclass(frozen=True, slots=True)
class StreamBroken:
    """The answering backend failed after text reached the caller: the stream ends with this."""

    strategy: str
    backend: str
    reason: str
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The stream ended properly; ``answer.text`` holds the whole text."""

    answer: Answer


@dataclass(frozen=True, slots=True)
class EngineWaiting:
    """The call waits for its target's engine, which is restarting (never a stream's last item).
    A loading indication for the client: the gateway and the tools send it as an SSE comment,
    which every SSE client (OpenAI's among them) skips."""

    strategy: str
    backend: str
    reason: str  # what is happening: "engine smollm2-135m killed by SIGKILL, restart 1/3 in progress"
    wait_s: float  # the most it will wait from now


RouterStreamItem = TextDelta | StreamDone | StreamBroken | EngineWaiting
