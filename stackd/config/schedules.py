"""Stacks that follow the day: the ``schedules:`` section and a stack's ``idle:`` rule.

A schedule is a list of change points, like a thermostat's program: each window names the time
it begins (weekdays + ``at: "HH:MM"``, or a five-field ``cron:`` expression) and the stack that
runs from then until the next window begins. Times are read in ``timezone`` (IANA), so a window
at 09:00 begins at 09:00 local time on both sides of a DST change. The policy that reads these
values is pure (``stackd.schedule``); the daemon applies it on the manager's worker.
"""

from __future__ import annotations

import re
import zoneinfo
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._:-]*$", max_length=64)]
SECONDS_PER_DAY = 86_400
_HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


WEEKDAYS = list(Weekday)  # index = datetime.weekday()


class ScheduleWindow(_Frozen):
    """One change point: from ``at`` on ``days`` (or each time ``cron`` fires), run ``stack``."""

    stack: Name = Field(description="The stack that runs from this window's start until the next window's.")
    days: list[Weekday] | None = Field(
        None, description="Weekdays (mon..sun) on which the window begins at 'at'; default every day."
    )
    at: str | None = Field(None, description="Local time the window begins, HH:MM (24 h).")
    cron: str | None = Field(
        None, description="Five-field cron expression (minute hour day month weekday) instead of days/at."
    )

    @field_validator("at")
    @classmethod
    def _hh_mm(cls, value: str | None) -> str | None:
        if value is not None and not _HH_MM.match(value):
            raise ValueError("write the time as HH:MM on a 24 h clock, e.g. '09:00' or '18:30'")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            cron_trigger(value, "UTC")
        except ValueError as exc:
            raise ValueError(f"not a cron expression ({exc}); write 'MIN HOUR DAY MONTH WEEKDAY'") from None
        return value

    @model_validator(mode="after")
    def _one_time(self) -> ScheduleWindow:
        if (self.at is None) == (self.cron is None):
            raise ValueError(
                "a window begins either at 'at: HH:MM' (with optional days) or at 'cron'; set one"
            )
        if self.cron is not None and self.days is not None:
            raise ValueError("'days' goes with 'at'; put the weekdays in the cron expression instead")
        return self


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _weekdays(field: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday, 1 = Monday; names; ranges, lists, steps) as
    apscheduler's names. Its ``from_crontab`` reads numbers as 0 = Monday, so ``1-5`` would be
    Tuesday to Saturday: the numbers are translated here, never passed through."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        else:
            low, _, high = span.partition("-")
            first = _CRON_DAYS.index(low) if low in _CRON_DAYS else int(low)
            last = (_CRON_DAYS.index(high) if high in _CRON_DAYS else int(high)) if high else first
        if not 0 <= first <= last <= 7 or step < 1:
            raise ValueError(f"weekday field '{field}' is out of 0-7")
        days.update(range(first, last + 1, step))
    return ",".join(dict.fromkeys(_CRON_DAYS[d] for d in sorted(days)))


def cron_trigger(expression: str, zone: str) -> Any:
    """apscheduler's ``CronTrigger`` for a five-field crontab line, weekdays read as cron reads them."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=_weekdays(weekday), timezone=zone
    )


class Schedules(_Frozen):
    """When which stack runs. A manual switch holds until the next window begins."""

    timezone: str = Field("UTC", description="IANA time zone the windows are read in, e.g. Europe/Paris.")
    windows: list[ScheduleWindow] = Field(
        min_length=1, description="The change points; order does not matter."
    )
    misfire_grace_s: float = Field(
        300.0,
        ge=0,
        le=SECONDS_PER_DAY,
        description="A window that began while the daemon was stopped, at most this long ago, is fired "
        "late at start (reported as late); one missed by longer is reported as missed, and the window "
        "current now applies.",
    )
    defer_max_s: float = Field(
        1800.0,
        gt=0,
        le=SECONDS_PER_DAY,
        description="How long a scheduled switch waits for a held lease or a running switch before it "
        "gives up until the next window (it never interrupts either).",
    )
    tick_s: float = Field(15.0, gt=0, le=3600, description="Seconds between two evaluations of the policy.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "unknown time zone; write an IANA name such as 'Europe/Paris' or 'UTC'"
            ) from None
        return value


class IdleRule(_Frozen):
    """Switch down after ``after_s`` without calls to the stack's members; a call wakes it back."""

    after_s: float = Field(
        gt=0,
        le=7 * SECONDS_PER_DAY,
        description="Seconds without a call to a member (leases and streams count as use) before the "
        "switch down.",
    )
    to: Name = Field(
        description="The lower stack to switch to; its own idle: is followed in turn (a chain "
        "must end: a cycle is refused)."
    )
    wake_wait_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="How long a call for a role only this stack has waits while it is woken back.",
    )
    wake_wait_role_s: dict[Name, float] = Field(
        default_factory=dict, description="role -> seconds: a per-role bound instead of wake_wait_s."
    )

    @field_validator("wake_wait_role_s")
    @classmethod
    def _bounded(cls, value: dict[str, float]) -> dict[str, float]:
        for role, seconds in value.items():
            if not 0 < seconds <= 3600:
                raise ValueError(f"{role}: a wake wait is more than 0 and at most 3600 seconds")
        return value

    def wait_for(self, role: str | None) -> float:
        return self.wake_wait_role_s.get(role or "", self.wake_wait_s)


_HOLD = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
UNTIL_NEXT = "until-next"
# The holds an API caller may write, in JSON Schema's words: a positive number whose size keeps it
# within the 7 days a hold may last, in seconds (up to 5 digits), minutes (4), hours (2) or days
# (1-7), or until-next. ``hold_seconds`` reads the same forms.
_POSITIVE = r"(?:[1-9]\d{0,%d}(?:\.\d+)?|0\.\d*[1-9]\d*)"
HOLD_PATTERN = rf"^(?:{UNTIL_NEXT}|{_POSITIVE % 4}s?|{_POSITIVE % 3}m|{_POSITIVE % 1}h|[1-7]d)$"


def hold_seconds(text: str) -> float | None:
    """``--hold``'s value: ``2h``, ``90m``, ``3600`` (seconds) -> seconds; ``until-next`` -> None."""
    if text == UNTIL_NEXT:
        return None
    match = _HOLD.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"write a duration such as 2h, 90m or 3600 (seconds), or '{UNTIL_NEXT}'")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if seconds > 7 * SECONDS_PER_DAY:
        raise ValueError("a hold is at most 7 days; switch again to hold longer")
    return seconds
