"""The JSON of what calls did, as the CLI reads it: ``GET /usage`` (its rows, the slices, the
energy), ``GET /slices``, ``POST /tools/reason``, ``/keys`` and ``/leases``. TypedDicts, as in
``stackd.cli.shapes`` (typing only; ``total=False`` where a key is optional)."""

from __future__ import annotations

from typing import TypedDict


class Attempt(TypedDict, total=False):
    strategy: str
    backend: str | None
    status: str
    reason: str | None
    elapsed_ms: float


class UsageRow(TypedDict, total=False):
    strategy: str
    backend: str | None
    requests: int
    answered: int
    skipped: int
    failures: dict[str, int]
    mean_first_token_ms: float | None
    mean_total_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: int | None
    tokens_unknown: int | None
    cost_usd: float


class EnergyRow(TypedDict):
    stack: str
    wh: float


class SliceLatency(TypedDict):
    mean_ms: float


class SliceTally(TypedDict):
    """One slice's counts since the daemon started (``stackd.router.slices``' stats)."""

    tried: int
    acceptance: float | None
    served: int
    promotions: int
    retries: int
    budget_falls: int
    latency: SliceLatency
    prompt_tokens: int
    completion_tokens: int
    cost_per_1k_tokens_usd: float
    regrets: int
    regret_replays: int


class ServedSlice(TypedDict):
    preset: str
    slice: str
    served: int
    validated: int
    promoted_here: int
    prompt_tokens: int
    completion_tokens: int
    mean_latency_ms: float


class UsageSlices(TypedDict, total=False):
    served: list[ServedSlice]
    since_start: dict[str, SliceTally]


class UsageAnswer(TypedDict, total=False):
    rows: list[UsageRow]
    energy: list[EnergyRow]
    slices: UsageSlices


class Preset(TypedDict):
    policy_version: str
    order: list[str]


class SliceBudget(TypedDict):
    tokens_today: int
    tokens_per_day: int | None
    calls_last_minute: int
    requests_per_minute: int | None


class SliceControls(TypedDict, total=False):
    kill_switch: bool
    kill_switch_reason: str | None
    budgets: dict[str, SliceBudget]


class SlicesAnswer(TypedDict, total=False):
    """``GET /slices``."""

    controls: SliceControls
    presets: dict[str, Preset]
    slices: dict[str, SliceTally]


class ReasonUsage(TypedDict, total=False):
    prompt_tokens: int | None
    completion_tokens: int | None
    estimated: bool


class ReasonError(TypedDict, total=False):
    message: str
    attempts: list[Attempt]


class ReasonAnswer(TypedDict, total=False):
    """The answer, or the stream's last event (its deltas are ``{"delta": text}``)."""

    delta: str
    answer: str
    error: ReasonError
    attempts: list[Attempt]
    backend: str | None
    model: str
    strategy: str
    usage: ReasonUsage


class KeyToday(TypedDict):
    tokens: int
    cost_usd: float


class KeyRow(TypedDict, total=False):
    name: str
    scopes: list[str]
    models: list[str]
    rpm: float | None
    daily_tokens: float | None
    daily_cost_usd: float | None
    expires: float | None
    revoked: bool
    today: KeyToday


class KeyUsageRow(TypedDict):
    key: str
    calls: int
    tokens: int
    cost_usd: float


class KeyUsage(TypedDict):
    rows: list[KeyUsageRow]


class LeaseRow(TypedDict, total=False):
    id: str
    model: str
    expires_in_s: float
    endpoint: str | None
