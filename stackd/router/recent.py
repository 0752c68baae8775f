"""The last calls the router made, each with its attempts: what the status page lists.

A call is recorded once, when it ends: answered, failed (every target failed or was skipped)
or broken (a stream failed after its first token). Only the route's label, the attempts
(strategy, backend, status, reason, time) and the wall-clock time are kept: never a prompt or
an answer. The reasons are the ``Attempt`` reasons, already redacted at the backend boundary.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypedDict

from stackd.router.types import Attempt

CallOutcome = Literal["answered", "failed", "broken"]
KEEP_CALLS = 20


class CallJson(TypedDict):
    """A call as the status page lists it; each attempt is ``Attempt.to_dict``."""

    at: float
    route: str
    outcome: CallOutcome
    attempts: list[dict[str, object]]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call: its route's label, how it ended and every attempt."""

    at: float
    route: str
    outcome: CallOutcome
    attempts: tuple[Attempt, ...]

    def to_dict(self) -> CallJson:
        return {
            "at": self.at,
            "route": self.route,
            "outcome": self.outcome,
            "attempts": [a.to_dict() for a in self.attempts],
        }


class RecentCalls:
    """The newest ``keep`` calls, in a bounded deque: a record costs one small object, and the
    oldest is dropped as a new one comes (no lock: everything runs on the event loop)."""

    def __init__(self, keep: int = KEEP_CALLS, clock: Callable[[], float] = time.time) -> None:
        self._calls: deque[CallRecord] = deque(maxlen=keep)
        self._clock = clock

    def record(self, route: str, outcome: CallOutcome, attempts: Iterable[Attempt]) -> None:
        self._calls.append(CallRecord(self._clock(), route, outcome, tuple(attempts)))

    def newest(self, limit: int = KEEP_CALLS) -> list[CallJson]:
        """Up to ``limit`` calls as JSON, newest first."""
        calls = list(self._calls)[-limit:] if limit > 0 else []
        return [call.to_dict() for call in reversed(calls)]
