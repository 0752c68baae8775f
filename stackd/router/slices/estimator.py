"""The difficulty estimator: a request's signals against the routing thresholds -> a slice.

Pure: no I/O, no clock. The signals are the guide's: prompt tokens, retrieved chunks, tool-chain
depth and the caller's effort. A slice is needed when ANY of its thresholds is reached; the
estimate is the largest slice needed (the smallest slice when none is), and it names the signal
that decided it, so every routing decision explains itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from stackd.config.slices import SliceRouting

Signal = Literal["prompt_tokens", "retrieved_chunks", "tool_depth", "effort"]
SIGNALS: tuple[Signal, ...] = ("prompt_tokens", "retrieved_chunks", "tool_depth", "effort")
CHARS_PER_TOKEN = 4  # the usual estimate for English text; no tokenizer of the slice runs here


@dataclass(frozen=True, slots=True)
class Signals:
    prompt_tokens: int = 0
    retrieved_chunks: int = 0
    tool_depth: int = 0
    effort: int | None = None

    def value(self, signal: Signal) -> int | None:
        value: int | None = getattr(self, signal)
        return value

    def to_dict(self) -> dict[str, int | None]:
        return {s: self.value(s) for s in SIGNALS}


@dataclass(frozen=True, slots=True)
class Estimate:
    """The proposed slice; ``signal`` reached ``threshold`` with ``value`` (None: no threshold was)."""

    slice: str
    signal: Signal | None
    value: int | None = None
    threshold: int | None = None

    @property
    def reason(self) -> str:
        if self.signal is None:
            return "no signal reached a threshold"
        return f"{self.signal} {self.value} >= {self.threshold}"


def text_of(content: object) -> str:
    """The text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def prompt_tokens(messages: Sequence[Mapping[str, object]]) -> int:
    chars = sum(len(text_of(m.get("content"))) for m in messages)
    return -(-chars // CHARS_PER_TOKEN)


def tool_depth(messages: Sequence[Mapping[str, object]], tools: Sequence[object] | None) -> int:
    """1 when tools are offered, plus each earlier tool call and each tool result in the messages."""
    depth = 1 if tools else 0
    for message in messages:
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            depth += len(calls)
        if message.get("role") in {"tool", "function"}:
            depth += 1
    return depth


def signals_of(
    messages: Sequence[Mapping[str, object]],
    tools: Sequence[object] | None = None,
    retrieved_chunks: int = 0,
    effort: int | None = None,
) -> Signals:
    return Signals(prompt_tokens(messages), retrieved_chunks, tool_depth(messages, tools), effort)


def estimate(routing: SliceRouting, signals: Signals) -> Estimate:
    """The largest slice some signal needs; ties go to the first signal in ``SIGNALS`` order."""
    for slice_name in reversed(routing.order[1:]):
        thresholds = routing.thresholds.get(slice_name)
        if thresholds is None:
            continue
        for signal in SIGNALS:
            threshold: int | None = getattr(thresholds, signal)
            value = signals.value(signal)
            if threshold is not None and value is not None and value >= threshold:
                return Estimate(slice_name, signal, value, threshold)
    return Estimate(routing.order[0], None)
