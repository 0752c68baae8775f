"""When windows begin: pure arithmetic over a ``Schedules`` value and a Unix time.

No clock is read here: every function takes ``now``. A window's start is computed in the
schedule's IANA zone from the local date and time, so 09:00 stays 09:00 across a DST change (the
day is 23 or 25 hours long, not the window). A local time the clock skips (02:30 on a spring-forward
night) begins at the same distance after the jump (03:30); a time that happens twice (autumn)
begins at its first occurrence. Cron windows use apscheduler's ``CronTrigger`` (the same rules)
as a pure next-fire function.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from apscheduler.triggers.cron import CronTrigger

from stackd.config.schedules import WEEKDAYS, Schedules, ScheduleWindow, cron_trigger

# How far back the window current now is looked for. A week holds every weekday window; a cron
# that fires less often (monthly) is looked for further back, a year at most.
LOOKBACK_S = 8 * 86_400
LONG_LOOKBACK_S = 370 * 86_400


@dataclass(frozen=True, slots=True)
class WindowStart:
    """Window ``index`` of the schedule begins at ``at`` (Unix seconds) and runs ``stack``."""

    at: float
    index: int
    stack: str


@lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@lru_cache(maxsize=64)
def _trigger(expression: str, zone: str) -> CronTrigger:
    trigger: CronTrigger = cron_trigger(expression, zone)
    return trigger


def _daily_starts(window: ScheduleWindow, zone: str, start: float, end: float) -> list[float]:
    assert window.at is not None
    tz = _zone(zone)
    hour, minute = (int(part) for part in window.at.split(":"))
    days = set(window.days) if window.days is not None else set(WEEKDAYS)
    first: date = datetime.fromtimestamp(start, tz).date() - timedelta(days=1)
    last: date = datetime.fromtimestamp(end, tz).date() + timedelta(days=1)
    out: list[float] = []
    day = first
    while day <= last:
        if WEEKDAYS[day.weekday()] in days:
            at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp()
            if start < at <= end:
                out.append(at)
        day += timedelta(days=1)
    return out


def _cron_starts(window: ScheduleWindow, zone: str, start: float, end: float) -> list[float]:
    assert window.cron is not None
    trigger = _trigger(window.cron, zone)
    out: list[float] = []
    # apscheduler rounds ``now`` up to the next whole second: a fire exactly at ``start`` is excluded.
    cursor = datetime.fromtimestamp(start + 0.001, UTC)
    previous: datetime | None = None
    while True:
        fire = trigger.get_next_fire_time(previous, cursor)
        if fire is None or fire.timestamp() > end:
            return out
        out.append(fire.timestamp())
        previous, cursor = fire, fire + timedelta(seconds=1)


def starts_between(schedules: Schedules, start: float, end: float) -> list[WindowStart]:
    """Every window start in ``(start, end]``, in time order (ties: the later-listed window last)."""
    found: list[WindowStart] = []
    for index, window in enumerate(schedules.windows):
        starts = (
            _cron_starts(window, schedules.timezone, start, end)
            if window.cron is not None
            else _daily_starts(window, schedules.timezone, start, end)
        )
        found += [WindowStart(at, index, window.stack) for at in starts]
    return sorted(found, key=lambda w: (w.at, w.index))


def current_window(schedules: Schedules, now: float) -> WindowStart | None:
    """The window that began last at or before ``now``; None when none ever began (within a year)."""
    for lookback in (LOOKBACK_S, LONG_LOOKBACK_S):
        starts = starts_between(schedules, now - lookback, now)
        if starts:
            return starts[-1]
    return None


def next_window(schedules: Schedules, now: float) -> WindowStart | None:
    """The first window that begins after ``now`` and changes nothing less than its start: the
    next start (a window may name the stack already running; it still begins, and ends a hold)."""
    for lookahead in (LOOKBACK_S, LONG_LOOKBACK_S):
        starts = starts_between(schedules, now, now + lookahead)
        if starts:
            return starts[0]
    return None


def local_time(schedules: Schedules, at: float) -> str:
    """``at`` in the schedule's zone, for people: ``Mon 2026-03-30 09:00 CEST``."""
    return datetime.fromtimestamp(at, _zone(schedules.timezone)).strftime("%a %Y-%m-%d %H:%M %Z")
