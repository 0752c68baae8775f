"""The one fake clock of the tests: wall-clock seconds a test moves by hand (``clock.now += 30``)."""

from __future__ import annotations

from stackd.router.circuit import Clock


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


_checked: Clock = FakeClock()  # mypy: the fake is a ``Clock``
