"""The ``routing`` section of an elastic preset: how a request is given a slice and promoted.

A preset with ``slices`` (6b, 9b, 12b -> models) may add ``routing``. Then a call that names the
preset alone (``elastic``) is routed: the difficulty estimator proposes a slice from the
request's signals against ``thresholds``, the controls (kill switch, caller and time pins,
budgets) adjust it, and validators promote an invalid answer up ``order``. See
``stackd/router/slices/``. A call that names a slice (``elastic:9b``) starts there and may only be
promoted up.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
Template = Literal["compact", "expressive"]


def check_clock(value: str) -> str:
    if not _CLOCK.match(value):
        raise ValueError("a time of day is 'HH:MM' in UTC, 00:00 to 23:59")
    return value


Clock = Annotated[str, AfterValidator(check_clock)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SliceThresholds(_Frozen):
    """A request needs at least this slice when ANY signal reaches its threshold (unset: unused)."""

    prompt_tokens: int | None = Field(None, ge=1, description="Estimated prompt tokens (characters / 4).")
    retrieved_chunks: int | None = Field(None, ge=1, description="The request's retrieved_chunks field.")
    tool_depth: int | None = Field(
        None, ge=1, description="Tools offered (1 if any) plus earlier tool calls and tool results."
    )
    effort: int | None = Field(None, ge=1, le=10, description="The caller's effort, 1-10.")


class SliceBudget(_Frozen):
    tokens_per_day: int | None = Field(
        None, ge=1, description="Prompt + completion tokens per UTC day; spent: the slice below serves."
    )
    requests_per_minute: int | None = Field(None, ge=1, description="Calls per rolling minute.")


class SliceSettings(_Frozen):
    """What a call on one slice is sent with, unless the caller sets it."""

    template: Template | None = Field(None, description="The system prompt template of this slice.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    budget: SliceBudget = SliceBudget()


class TimePin(_Frozen):
    """Between ``start`` and ``end`` (UTC; may wrap midnight) routed calls start on ``slice``."""

    slice: str
    start: Clock
    end: Clock


class CallerPin(_Frozen):
    """A caller (the gateway's ``user`` field, invoke_model's ``options.caller``) fixed to a slice."""

    slice: str
    temperature: float | None = Field(None, ge=0, le=2)
    promote: bool = Field(False, description="May an invalid answer be promoted above the pinned slice?")


class RegretReplay(_Frozen):
    """Replay a sample of promoted calls on the slice they left, in the background."""

    sample_rate: float = Field(0.0, ge=0, le=1, description="Share of promotions replayed (0: off).")
    tokens_per_day: int = Field(20000, ge=1, description="Tokens the replays may spend per UTC day.")


class SliceRouting(_Frozen):
    policy_version: str = Field(min_length=1, max_length=64, description="Recorded with every answer.")
    order: list[str] = Field(min_length=1, description="The slices from the smallest to the largest.")
    thresholds: dict[str, SliceThresholds] = Field(
        default_factory=dict, description="slice -> the signals that need it (the smallest slice needs none)."
    )
    templates: dict[Template, str] = Field(
        default_factory=dict, description="compact / expressive system prompts; {schema} is replaced."
    )
    template_in: Literal["system", "user"] = Field(
        "system",
        description="Where the template goes: a system message, or before the first user turn "
        "(for chat formats that drop system messages, as llama.cpp's gemma does).",
    )
    settings: dict[str, SliceSettings] = Field(default_factory=dict)
    pins: list[TimePin] = Field(default_factory=list)
    callers: dict[str, CallerPin] = Field(default_factory=dict)
    tool_retries: int = Field(1, ge=0, le=3, description="Retries of a failed tool call on the same slice.")
    regret: RegretReplay = RegretReplay()

    @model_validator(mode="after")
    def _slices_named(self) -> SliceRouting:
        if len(set(self.order)) != len(self.order):
            raise ValueError("routing.order names a slice twice; list each slice once, smallest first")
        known = set(self.order)
        named = [
            *(f"thresholds.{s}" for s in self.thresholds if s not in known),
            *(f"settings.{s}" for s in self.settings if s not in known),
            *(f"pins[{i}].slice" for i, p in enumerate(self.pins) if p.slice not in known),
            *(f"callers.{c}.slice" for c, p in self.callers.items() if p.slice not in known),
        ]
        if named:
            raise ValueError(f"{named[0]} is not in routing.order; use one of {self.order}")
        if self.order[0] in self.thresholds:
            raise ValueError(f"thresholds.{self.order[0]}: the smallest slice needs no threshold; remove it")
        for slice_name, settings in self.settings.items():
            if settings.template is not None and settings.template not in self.templates:
                raise ValueError(
                    f"settings.{slice_name}.template '{settings.template}' is not under routing.templates"
                )
        return self
