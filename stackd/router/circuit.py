"""A per-backend circuit breaker with an injected clock.

    closed ──N consecutive failures──▶ open ──cooldown elapsed, one caller admitted──▶ half-open
      ▲                                  ▲                                                │
      └──────────── trial succeeds ──────┼──────────────── trial fails ───────────────────┘

A timeout trips the circuit at once, whatever the count: a hanging backend costs its callers
the first-token timeout once, then nothing until the cool-down ends.

The router owns every verdict: it admits a caller, reports a success or a failure (and decides
that a timeout trips), resets on a passing health probe; the breaker only keeps the state.
While open, callers are refused at once (the chain skips the backend with the reason). In
half-open exactly one trial is in flight; others are refused until it reports. A trial that
never reports (its caller went away) is given back with ``abandon`` so the next caller may try.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from stackd.router import skips

Clock = Callable[[], float]  # seconds since the epoch (time.time in production)


class CircuitState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitBreaker:
    def __init__(self, failure_threshold: int, cooldown_s: float, clock: Clock) -> None:
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self.state = CircuitState.closed
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.last_failure = ""

    def admit(self) -> str | None:
        """None when a call may go ahead (possibly as the half-open trial), else why not."""
        if self.state is CircuitState.closed:
            return None
        if self.state is CircuitState.half_open:
            return skips.circuit_half_open()
        if self._clock() < self.open_until:
            return skips.circuit_open(self.open_until, self.consecutive_failures, self.last_failure)
        self.state = CircuitState.half_open
        return None

    def record_success(self) -> None:
        self.state = CircuitState.closed
        self.consecutive_failures = 0

    def record_failure(self, reason: str, trip: bool = False) -> None:
        """Count a failure; ``trip`` opens the circuit at once (a timeout: every further try would
        cost a caller the whole timeout again, while a refusal or a 500 costs a millisecond)."""
        self.consecutive_failures += 1
        self.last_failure = reason
        if trip or self.state is CircuitState.half_open or self.consecutive_failures >= self._threshold:
            self.state = CircuitState.open
            self.open_until = self._clock() + self._cooldown_s

    def probe_succeeded(self) -> None:
        """A health probe of the backend passed: an open circuit lets its next caller through as
        the half-open trial now, instead of refusing a healthy engine until the cool-down ends."""
        if self.state is CircuitState.open:
            self.open_until = min(self.open_until, self._clock())

    def abandon(self) -> None:
        """The admitted call ended without a verdict; a half-open trial slot is given back."""
        if self.state is CircuitState.half_open:
            self.state = CircuitState.open  # open_until has passed: the next caller is the trial

    def resettled(self, failure_threshold: int, cooldown_s: float) -> CircuitBreaker:
        """A breaker with new settings and this one's state (a half-open one is open: its trial
        still in flight reports here, so the new breaker's trial slot is free)."""
        circuit = CircuitBreaker(failure_threshold, cooldown_s, self._clock)
        circuit.consecutive_failures = self.consecutive_failures
        circuit.last_failure = self.last_failure
        circuit.open_until = self.open_until
        circuit.state = CircuitState.open if self.state is CircuitState.half_open else self.state
        return circuit

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "open_until": self.open_until if self.state is not CircuitState.closed else None,
        }
