"""The router's verdict on one attempt, the same for ``complete()`` and ``stream()``.

An attempt that ended with a finish is answered, unless it carries no text and no tool call (and
its target does not allow that): then it is ``empty``, a failure that falls through to the next
target. A failure counts in the target's breaker (a timeout trips it at once); an empty answer
or an attempt whose caller left gives the breaker no verdict.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from stackd.logs import content
from stackd.router import routes
from stackd.router.attempt_log import AttemptLog
from stackd.router.backends import Backend
from stackd.router.circuit import CircuitBreaker
from stackd.router.types import Answer, BackendError, ChatRequest, Completion, FailureKind, StreamEvent, Usage


@dataclass(frozen=True, slots=True)
class Admitted:
    """A target the router may try now: its backend, its breaker, the call's log, and when it began."""

    target: routes.Target
    backend: Backend
    circuit: CircuitBreaker
    log: AttemptLog
    start: float  # time.perf_counter() as the attempt began

    @property
    def model(self) -> str:
        """The model it runs on (admission skips targets without one)."""
        assert self.target.model is not None
        return self.target.model

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000


def finished(
    attempt: Admitted, finish: Completion, first_token_ms: float | None, request: ChatRequest
) -> Answer | None:
    """The verdict on an attempt that finished (a whole completion, or a stream's last event with
    its text): its ``Answer``, or None when it is ``empty`` (recorded as a failure that falls
    through; a tool call is an answer without text)."""
    if not attempt.target.allow_empty and blank(finish.text) and not finish.tool_calls:
        error = empty_answer(attempt.backend, finish.finish_reason)
        empty(attempt, error, first_token_ms, finish.usage)
        return None
    attempt.circuit.record_success()
    total_ms = attempt.elapsed_ms()
    answer = attempt.log.answered(
        attempt.target,
        attempt.backend.request_model,
        finish.text,
        finish.finish_reason,
        finish.usage,
        first_token_ms or total_ms,
        total_ms,
    )
    if finish.tool_calls:
        answer = replace(answer, tool_calls=finish.tool_calls)
    content.exchange(request.messages, answer.backend, answer.text)
    return answer


def failed(
    attempt: Admitted, error: BackendError, first_token_ms: float | None, *, broken: bool = False
) -> None:
    """A failed attempt: the breaker counts it, and a timeout trips it at once (every further try
    would cost a caller the whole timeout again, while a refusal or a 500 costs a millisecond);
    then the log records the attempt."""
    attempt.circuit.record_failure(str(error), trip=error.kind is FailureKind.timeout)
    attempt.log.failed(attempt.target, error, attempt.start, first_token_ms, broken=broken)


def empty(attempt: Admitted, error: BackendError, first_token_ms: float | None, usage: Usage) -> None:
    """An answer without text fails the attempt, but gives the breaker no verdict: the backend
    answered properly, and the request itself (a stop sequence, ``max_tokens: 1``) often asked
    for it; a caller must not be able to open a backend's circuit for everyone."""
    attempt.circuit.abandon()
    attempt.log.failed(attempt.target, error, attempt.start, first_token_ms, broken=False, usage=usage)


def blank(text: str) -> bool:
    """An answer with nothing to read: no text, or whitespace only."""
    return not text or text.isspace()


def empty_answer(backend: Backend, finish_reason: str) -> BackendError:
    return BackendError(
        FailureKind.empty,
        f"{backend.name} answered no text (finish_reason {finish_reason}); "
        "allow_empty: true on the strategy or preset accepts that",
    )


def escaped(exc: Exception, backend: Backend) -> BackendError:
    """A backend broke its contract (raised something else than ``BackendError``): the call still
    fails over, as ``malformed``. The message names the type only: the exception's own text may
    hold upstream bytes that were never redacted."""
    return BackendError(
        FailureKind.malformed, f"backend {backend.name} raised {type(exc).__name__} reading the answer"
    )


async def close_quietly(events: AsyncGenerator[StreamEvent, None]) -> None:
    """Close a backend's stream; the attempt's verdict is already recorded, so a failure of the
    backend's own clean-up changes nothing the caller may see (and must not reach the server)."""
    with contextlib.suppress(Exception):
        await events.aclose()
