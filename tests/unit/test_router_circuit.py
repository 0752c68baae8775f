"""The circuit breaker: closed -> open after N failures -> half-open with one trial -> closed / open."""

from __future__ import annotations

from stackd.router.circuit import CircuitBreaker, CircuitState
from tests.fake_clock import FakeClock


def state(circuit: CircuitBreaker) -> CircuitState:
    """Read afresh after each call (mypy would keep the narrowing of an earlier ``is`` check)."""
    return circuit.state


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    circuit = CircuitBreaker(3, 30.0, FakeClock())
    for _ in range(2):
        assert circuit.admit() is None
        circuit.record_failure("refused: x")
    assert state(circuit) is CircuitState.closed
    circuit.record_failure("refused: x")
    assert state(circuit) is CircuitState.open
    why = circuit.admit()
    assert why is not None
    assert why.startswith("circuit open until ")
    assert "3 consecutive failures (last: refused: x)" in why


def test_a_success_resets_the_count() -> None:
    circuit = CircuitBreaker(2, 30.0, FakeClock())
    circuit.record_failure("a")
    circuit.record_success()
    circuit.record_failure("b")
    assert state(circuit) is CircuitState.closed


def test_half_open_admits_exactly_one_trial_after_the_cooldown() -> None:
    clock = FakeClock()
    circuit = CircuitBreaker(1, 30.0, clock)
    circuit.record_failure("timeout")
    clock.now += 29.9
    assert circuit.admit() is not None
    clock.now += 0.2
    assert circuit.admit() is None
    assert state(circuit) is CircuitState.half_open
    assert circuit.admit() == "circuit half-open: a trial request is in flight"


def test_a_successful_trial_closes_and_a_failed_one_reopens() -> None:
    clock = FakeClock()
    circuit = CircuitBreaker(1, 30.0, clock)
    circuit.record_failure("x")
    clock.now += 31
    assert circuit.admit() is None
    circuit.record_failure("again")
    assert state(circuit) is CircuitState.open
    assert circuit.open_until == clock.now + 30
    clock.now += 31
    assert circuit.admit() is None
    circuit.record_success()
    assert state(circuit) is CircuitState.closed
    assert circuit.admit() is None


def test_an_abandoned_trial_lets_the_next_caller_try() -> None:
    clock = FakeClock()
    circuit = CircuitBreaker(1, 30.0, clock)
    circuit.record_failure("x")
    clock.now += 31
    assert circuit.admit() is None
    circuit.abandon()
    assert circuit.admit() is None
    assert state(circuit) is CircuitState.half_open


def test_a_timeout_trips_the_circuit_at_once() -> None:
    circuit = CircuitBreaker(3, 30.0, FakeClock())
    circuit.record_failure("timeout: no first token", trip=True)
    assert state(circuit) is CircuitState.open


def test_a_passing_health_probe_half_opens_an_open_circuit_at_once() -> None:
    clock = FakeClock()
    circuit = CircuitBreaker(1, 30.0, clock)
    circuit.record_failure("timeout: no first token", trip=True)
    assert circuit.admit() is not None  # open: refused for the 30 s cool-down
    clock.now += 1
    circuit.probe_succeeded()  # the engine is back: do not refuse it for 29 s more
    assert circuit.admit() is None and state(circuit) is CircuitState.half_open
    assert circuit.admit() == "circuit half-open: a trial request is in flight"  # still one trial
    circuit.record_success()
    assert state(circuit) is CircuitState.closed


def test_a_passing_probe_leaves_a_closed_or_half_open_circuit_as_it_is() -> None:
    clock = FakeClock()
    circuit = CircuitBreaker(3, 30.0, clock)
    circuit.probe_succeeded()
    assert state(circuit) is CircuitState.closed
    circuit.record_failure("x", trip=True)
    clock.now += 31
    assert circuit.admit() is None  # the half-open trial is in flight
    circuit.probe_succeeded()
    assert state(circuit) is CircuitState.half_open
    assert circuit.admit() is not None  # a probe does not let a second trial through
