"""One home for "why was this backend skipped": every skip reason is spelled in ``router/skips.py``,
and the router, not the attempt log, decides what a failure does to a circuit."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import stackd.router
from stackd.router import skips
from stackd.router.attempt_log import AttemptLog
from stackd.router.circuit import CircuitBreaker
from stackd.router.local_queue import LocalQueue, LocalQueueFull
from tests.fake_clock import FakeClock

ROUTER = Path(stackd.router.__file__).parent
DECIDERS = ("routes.py", "router.py", "local_queue.py", "circuit.py")


def literal_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def spelled_reasons(source: str) -> list[str]:
    """Skip reasons written in place: a literal as ``Target``'s skip, ``log.skipped``'s reason,
    ``LocalQueueFull``'s message, or a string returned by ``admit``."""
    found: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = list(node.args) + [k.value for k in node.keywords if k.arg == "skip"]
            if name == "Target" and len(args) >= 3 and literal_text(args[2]):
                found.append(ast.unparse(node))
            if name == "skipped" and len(node.args) >= 2 and literal_text(node.args[1]):
                found.append(ast.unparse(node))
            if name == "LocalQueueFull" and node.args and literal_text(node.args[0]):
                found.append(ast.unparse(node))
        if isinstance(node, ast.FunctionDef) and node.name == "admit":
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and ret.value is not None and literal_text(ret.value):
                    found.append(ast.unparse(ret))
    return found


def test_no_skip_reason_is_spelled_outside_skips() -> None:
    for name in DECIDERS:
        assert spelled_reasons((ROUTER / name).read_text()) == [], name


def test_the_check_sees_a_reason_spelled_in_place() -> None:
    source = 'def f(log, t):\n    log.skipped(t, f"model {t} is odd")\n    return Target("s", None, "why")\n'
    assert len(spelled_reasons(source)) == 2


def test_the_attempt_log_only_records_a_failure() -> None:
    assert "circuit" not in inspect.signature(AttemptLog.failed).parameters


def test_the_circuit_gives_the_texts_of_skips() -> None:
    clock = FakeClock()
    circuit = CircuitBreaker(1, 30.0, clock)
    circuit.record_failure("refused: x")
    assert circuit.admit() == skips.circuit_open(clock.now + 30.0, 1, "refused: x")
    clock.now += 31
    assert circuit.admit() is None
    assert circuit.admit() == skips.circuit_half_open()


async def test_the_local_queue_gives_the_text_of_skips() -> None:
    queue = LocalQueue(size=0, concurrency=1)
    async with queue.slot(1.0):
        with pytest.raises(LocalQueueFull) as caught:
            async with queue.slot(1.0):
                pass
    assert str(caught.value) == skips.local_queue_full(0, 1) == "local queue full (0 waiting, 1 running)"
