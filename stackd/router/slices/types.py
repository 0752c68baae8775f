"""Values of slice routing: what a routed call asks, each slice it tried, and what it answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from stackd.router.slices.validators import ToolCall
from stackd.router.types import Answer, ChatRequest

TryOutcome = Literal["accepted", "invalid", "promoted", "retried", "unavailable"]


class SliceTryJson(TypedDict):
    slice: str
    backend: str | None
    outcome: TryOutcome
    reason: str
    elapsed_ms: float
    template: str | None


# "from" is a keyword: the functional form spells the key as the routing record does.
BudgetFall = TypedDict("BudgetFall", {"from": str, "to": str, "why": str})


class SlicedAnswerJson(TypedDict):
    """The routing record of a sliced answer (``x_stackd.routing`` and the audit row)."""

    preset: str
    slice: str
    decided_by: str
    decision: str
    signals: dict[str, int | None]
    policy_version: str
    model_digest: str
    validated: bool
    check: str
    tries: list[SliceTryJson]
    tool_call: dict[str, object] | None
    budget_falls: list[BudgetFall]
    audit_id: int | None


@dataclass(frozen=True, slots=True)
class SliceRequest:
    """A chat request plus what routing reads: the answer's contract and the difficulty signals."""

    chat: ChatRequest
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    retrieved_chunks: int = 0
    effort: int | None = None
    caller: str | None = None


@dataclass(frozen=True, slots=True)
class SliceTry:
    """One answer (or failure) of one slice, and why the call stayed or left."""

    slice: str
    backend: str | None
    outcome: TryOutcome
    reason: str
    elapsed_ms: float = 0.0
    template: str | None = None

    def to_dict(self) -> SliceTryJson:
        return {
            "slice": self.slice,
            "backend": self.backend,
            "outcome": self.outcome,
            "reason": self.reason,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "template": self.template,
        }


@dataclass(frozen=True, slots=True)
class SlicedAnswer:
    """The router's answer of the slice that served, and the routing record that goes with it."""

    answer: Answer
    preset: str
    slice: str
    decided_by: str
    decision: str
    signals: dict[str, int | None]
    policy_version: str
    model_digest: str
    validated: bool
    check: str
    tries: tuple[SliceTry, ...]
    tool_call: ToolCall | None = None
    falls: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)
    audit_id: int | None = None

    @property
    def promotions(self) -> int:
        return sum(t.outcome == "promoted" for t in self.tries)

    def to_dict(self) -> SlicedAnswerJson:
        return {
            "preset": self.preset,
            "slice": self.slice,
            "decided_by": self.decided_by,
            "decision": self.decision,
            "signals": self.signals,
            "policy_version": self.policy_version,
            "model_digest": self.model_digest,
            "validated": self.validated,
            "check": self.check,
            "tries": [t.to_dict() for t in self.tries],
            "tool_call": self.tool_call.to_dict() if self.tool_call else None,
            "budget_falls": [{"from": a, "to": b, "why": w} for a, b, w in self.falls],
            "audit_id": self.audit_id,
        }
