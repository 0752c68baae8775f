"""Why a target was skipped: every reason the router gives for not trying a backend, in one place.

A skip is decided at one of three moments; the reason is always spelled here, and the router's
``AttemptLog`` only records it (an ``Attempt`` with status ``skipped``, the accounting's tally):

- resolving the route (``routes.py``, pure): no active stack, a model that is not a member, a
  model that speaks plain HTTP, a role that is not bound, none of a strategy's models present,
  a model an earlier strategy already tried;
- admitting the target (``ReasonRouter._admit``, per call): no model, a backend that cannot be
  built, a model without a chat protocol, a backend that cannot honour the request's
  ``response_format`` or ``tools`` (``Backend.unsupported`` states what), a backend that is not
  ready (``Backend.not_ready`` states its own reason, e.g. no API key), a circuit that is not closed (``circuit_open`` /
  ``circuit_half_open``, asked of the breaker);
- asking a process member's engine (``EngineReadiness``, after waiting while it restarts): it is
  down, still restarting after ``process.restart_wait_s``, or was never started;
- waiting for the local queue (``local_queue.py``): the queue is full, or no slot came in time.

Each function returns the text a person reads in ``attempts[].reason``, in ``stackd status`` and
in the 503 of a call whose every target failed or was skipped: keep them stable.
"""

from __future__ import annotations

from datetime import UTC, datetime

NO_ACTIVE_STACK = "no active stack"
NO_MODEL = "no model"


def not_a_member(model: str, stack: str | None) -> str:
    return f"model '{model}' is not in active stack '{stack}'"


def plain_http(model: str) -> str:
    return f"model '{model}' speaks plain HTTP, not a chat API"


def role_unbound(role: str, stack: str | None) -> str:
    return f"role '{role}' is not bound in active stack '{stack}'"


def none_present(models: list[str], stack: str | None) -> str:
    return f"none of {', '.join(models)} is in active stack '{stack}'"


def already_tried(strategy: str) -> str:
    return f"already tried by strategy '{strategy}'"


def backend_unbuildable(model: str, exc: Exception) -> str:
    return f"backend of '{model}' cannot be built: {type(exc).__name__}"


def unavailable(why: str | None) -> str | None:
    """A member the manager knows cannot serve now (a swarm member's node is down): its reason."""
    return f"not available: {why}" if why else None


def engine_down(reason: str) -> str:
    """A process member's engine that will not answer without a switch (its restart gave up)."""
    return f"not available: {reason}"


def engine_not_ready(reason: str, waited_s: float) -> str:
    """A process member's engine still restarting after the wait its member allows."""
    return f"{reason}; not ready within {waited_s:g} s (process.restart_wait_s)"


def engine_not_started(model: str) -> str:
    return f"not available: engine {model} is not running"


def no_chat_protocol(model: str) -> str:
    return f"model '{model}' has no chat protocol"


def output_unsupported(why: str) -> str:
    return f"cannot honour the answer's contract: {why}"


def circuit_open(open_until: float, failures: int, last_failure: str) -> str:
    until = datetime.fromtimestamp(open_until, UTC).strftime("%H:%M:%S")
    return f"circuit open until {until} UTC after {failures} consecutive failures (last: {last_failure})"


def circuit_half_open() -> str:
    return "circuit half-open: a trial request is in flight"


def local_queue_full(waiting: int, running: int) -> str:
    return f"local queue full ({waiting} waiting, {running} running)"


def no_queue_slot(wait_s: float) -> str:
    return f"no local queue slot within {wait_s:g} s"
