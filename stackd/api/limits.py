"""Per-key limits: requests a minute, tokens and cloud cost a day (UTC) → 429 with ``Retry-After``.

Counted in memory, so ``admit`` costs a request no database read: the minute's requests as a
window of times, the day's tokens and cost as sums. The sums grow when the usage ledger writes a
keyed call (``KeyedUsageStore.on_call``), and at start the meter is seeded from the ledger's
keyed rows (``KeyStore.spend_since``): a limit reached before a restart is still reached after it. A call's
tokens are known only once it is answered, so a key may pass its daily limit by one call; the
next one is refused.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from stackd.api.keyring import Caller
from stackd.errors import StackdError
from stackd.state.keys import KeySpend

DAY_S = 86_400.0
MINUTE_S = 60.0


class RateLimited(StackdError):
    """A key over one of its limits (429); ``limit`` names it, ``retry_after_s`` says when it frees."""

    status = 429


@dataclass(slots=True)
class _Tally:
    day: int
    tokens: int = 0
    cost_usd: float = 0.0


def day_of(ts: float) -> int:
    return int(ts // DAY_S)


class KeyMeter:
    def __init__(self, clock: Callable[[], float], seed: Mapping[str, KeySpend] | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # ``add`` runs where usage is recorded: the loop or a thread
        self._minute: dict[str, deque[float]] = {}
        self._today: dict[str, _Tally] = {}
        self.refused: dict[tuple[str, str], int] = {}  # (key, limit) -> 429s, for /metrics
        day = day_of(clock())
        for key, spend in (seed or {}).items():
            self._today[key] = _Tally(day, spend.tokens, spend.cost_usd)
            self._minute[key] = deque(spend.recent)

    @staticmethod
    def seed_window(now: float) -> tuple[float, float]:
        """(start of today, a minute ago): what ``KeyStore.spend_since`` should read at start."""
        return day_of(now) * DAY_S, now - MINUTE_S

    def admit(self, caller: Caller, data_path: bool) -> None:
        """Count one request of ``caller``; ``RateLimited`` when it is over a limit. The daily
        limits (tokens, cost) stop only calls on the data path: an exhausted key may still read."""
        record = caller.record
        if record is None or (
            record.rpm is None and record.daily_tokens is None and record.daily_cost_usd is None
        ):
            return
        now = self._clock()
        with self._lock:
            if data_path:
                tally = self._tally(caller.name, now)
                next_day = (day_of(now) + 1) * DAY_S - now
                if record.daily_tokens is not None and tally.tokens >= record.daily_tokens:
                    self._refuse(caller.name, "daily_tokens", record.daily_tokens, next_day)
                if record.daily_cost_usd is not None and tally.cost_usd >= record.daily_cost_usd:
                    self._refuse(caller.name, "daily_cost_usd", record.daily_cost_usd, next_day)
            if record.rpm is not None:
                window = self._minute.setdefault(caller.name, deque())
                while window and window[0] <= now - MINUTE_S:
                    window.popleft()
                if len(window) >= record.rpm:
                    self._refuse(caller.name, "rpm", record.rpm, window[0] + MINUTE_S - now)
                window.append(now)

    def _refuse(self, key: str, limit: str, value: float, retry_after_s: float) -> None:
        self.refused[(key, limit)] = self.refused.get((key, limit), 0) + 1
        seconds = max(1, int(retry_after_s + 0.999))
        raise RateLimited(
            f"key '{key}' is over its {limit} limit ({value:g}); retry after {seconds} s",
            limit=limit,
            retry_after_s=seconds,
        )

    def _tally(self, key: str, now: float) -> _Tally:
        tally = self._today.get(key)
        if tally is None or tally.day != day_of(now):
            tally = self._today[key] = _Tally(day_of(now))
        return tally

    def add(self, key: str, tokens: int, cost_usd: float) -> None:
        """A call of ``key`` was written to the ledger (thread-safe)."""
        with self._lock:
            tally = self._tally(key, self._clock())
            tally.tokens += tokens
            tally.cost_usd += cost_usd

    def today(self, key: str) -> tuple[int, float]:
        """(tokens, cost) of ``key`` today."""
        with self._lock:
            tally = self._tally(key, self._clock())
            return tally.tokens, tally.cost_usd
