"""The reason() chain, backends per protocol, circuit breakers and accounting (docs/router.md)."""

from stackd.router.router import ReasonRouter
from stackd.router.types import Answer, Attempt, ChatRequest, FailureKind, Usage

__all__ = ["Answer", "Attempt", "ChatRequest", "FailureKind", "ReasonRouter", "Usage"]
