"""The operator's controls and the slices' spending: the kill switch, daily token budgets, rate limits.

In memory, one instance per daemon (the router holds it): the kill switch is reset by a restart.
The day's spending is not: at start it is read back from the usage ledger (``restore``), where
every answered call's tokens were recorded (journal, then SQLite) before the call was answered,
so a crash or restart never hands a slice its day's budget again. Time comes from the injected clock, so budgets and
windows are tested without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from stackd.config.slices import SliceRouting

log = logging.getLogger("stackd.router.slices")
MINUTE_S = 60.0


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def day_start(now: float) -> float:
    """The epoch second at which ``now``'s UTC day began."""
    return float(int(now // 86400) * 86400)


class SliceControls:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.kill_switch = False
        self.kill_switch_reason: str | None = None
        self.kill_switch_since: float | None = None
        self._day = utc_day(clock())
        self._tokens: dict[tuple[str, str], int] = {}  # (preset, slice) -> tokens spent today
        self._calls: dict[tuple[str, str], deque[float]] = {}  # (preset, slice) -> call times, last minute

    def now(self) -> float:
        return self._clock()

    def set_kill_switch(self, on: bool, reason: str | None = None) -> None:
        if on != self.kill_switch:
            log.warning(
                "slice kill switch %s%s",
                "ON: every routed call goes to the largest slice" if on else "off",
                f" ({reason})" if reason else "",
            )
        self.kill_switch = on
        self.kill_switch_reason = reason if on else None
        self.kill_switch_since = self._clock() if on else None

    def _roll(self) -> None:
        day = utc_day(self._clock())
        if day != self._day:
            self._day, self._tokens = day, {}

    def restore(self, spent: dict[tuple[str, str], int]) -> None:
        """Today's tokens per (preset, slice) as the usage ledger has them (at start)."""
        self._roll()
        for key, tokens in spent.items():
            self._tokens[key] = self._tokens.get(key, 0) + tokens

    def spent(self, preset: str, slice_name: str) -> int:
        self._roll()
        return self._tokens.get((preset, slice_name), 0)

    def spend(self, preset: str, slice_name: str, tokens: int) -> None:
        self._roll()
        key = (preset, slice_name)
        self._tokens[key] = self._tokens.get(key, 0) + tokens

    def admit(self, preset: str, slice_name: str) -> None:
        """Count a call sent to the slice (its rate limit's window)."""
        self._window(preset, slice_name).append(self._clock())

    def _window(self, preset: str, slice_name: str) -> deque[float]:
        calls = self._calls.setdefault((preset, slice_name), deque())
        horizon = self._clock() - MINUTE_S
        while calls and calls[0] <= horizon:
            calls.popleft()
        return calls

    def over_budget(self, routing: SliceRouting, preset: str, slice_name: str) -> str | None:
        """Why ``slice_name`` has no room now (its day's tokens spent, its rate reached), or None."""
        settings = routing.settings.get(slice_name)
        if settings is None:
            return None
        budget = settings.budget
        if budget.tokens_per_day is not None:
            spent = self.spent(preset, slice_name)
            if spent >= budget.tokens_per_day:
                return f"{slice_name}: tokens_per_day {budget.tokens_per_day} spent ({spent} today)"
        if budget.requests_per_minute is not None:
            calls = len(self._window(preset, slice_name))
            if calls >= budget.requests_per_minute:
                return f"{slice_name}: requests_per_minute {budget.requests_per_minute} reached"
        return None

    def to_dict(self, routing: dict[str, SliceRouting]) -> dict[str, object]:
        budgets = {
            f"{preset}:{name}": {
                "tokens_today": self.spent(preset, name),
                "tokens_per_day": s.budget.tokens_per_day,
                "calls_last_minute": len(self._window(preset, name)),
                "requests_per_minute": s.budget.requests_per_minute,
            }
            for preset, r in sorted(routing.items())
            for name, s in r.settings.items()
            if s.budget.tokens_per_day is not None or s.budget.requests_per_minute is not None
        }
        return {
            "kill_switch": self.kill_switch,
            "kill_switch_reason": self.kill_switch_reason,
            "kill_switch_since": self.kill_switch_since,
            "budgets": budgets,
        }
