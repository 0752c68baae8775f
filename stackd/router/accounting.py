"""Per (strategy, backend) accounting of the router: counts, failures by kind, latency, tokens, cost.

Recording is a few integer additions on the hot path. ``stats()`` serves ``/status`` and the
Prometheus collector reads the same cells at scrape time. Each call also keeps its attempts as
rows of the usage ledger (``attempt_row``, ``AttemptLog``); ``call_rows`` adds up a call's
attempts at the same backend, and the router records them before it answers
(``stackd.router.ledger``).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import NamedTuple, TypedDict

from stackd.router.types import AttemptStatus, FailureKind, Usage
from stackd.state.usage import UsageRow


class TallyJson(TypedDict):
    """A tally as ``/status`` shows it (latencies are ``Latency.to_dict``)."""

    requests: int
    answered: int
    skipped: int
    failures: dict[str, int]
    latency_first_token: dict[str, float]
    latency_total: dict[str, float]
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: int
    tokens_unknown: int
    cost_usd: float


class StrategyRow(TallyJson):
    """One (strategy, backend) row of ``/status``'s ``router.strategies``."""

    strategy: str
    backend: str


# Upper bounds in ms; the last bucket is +Inf. Shared with the Prometheus histograms.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1,
    2.5,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
)
NO_BACKEND = "-"
NO_FAILURES: dict[str, int] = dict.fromkeys(FailureKind, 0)  # copied: iterating the enum is slow


@dataclass(slots=True)
class LatencyTally:
    count: int = 0
    sum_ms: float = 0.0
    max_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))  # Prometheus's

    def add(self, ms: float) -> None:
        self.count += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1

    def to_dict(self) -> dict[str, float]:
        mean = self.sum_ms / self.count if self.count else 0.0
        return {"count": self.count, "mean_ms": round(mean, 3), "max_ms": round(self.max_ms, 3)}


@dataclass(slots=True)
class Tally:
    """What one (strategy, backend) pair did."""

    requests: int = 0  # attempts sent to the backend (skips excluded)
    answered: int = 0
    skipped: int = 0
    failures: dict[str, int] = field(default_factory=lambda: NO_FAILURES.copy())
    first_token: LatencyTally = field(default_factory=LatencyTally)
    total: LatencyTally = field(default_factory=LatencyTally)
    prompt_tokens: int = 0  # the known figures (reported or estimated)
    completion_tokens: int = 0
    tokens_estimated: int = 0  # answers whose usage holds stackd's own count
    tokens_unknown: int = 0  # answers with a figure nobody could count (not in the sums)
    cost_usd: float = 0.0

    def add(
        self,
        status: AttemptStatus,
        kind: FailureKind | None,
        first_token_ms: float | None,
        total_ms: float,
        usage: Usage | None,
        cost_usd: float,
    ) -> None:
        if status == "skipped":
            self.skipped += 1
            return
        self.requests += 1
        if status == "answered":
            self.answered += 1
        elif kind is not None:
            self.failures[kind] = self.failures.get(kind, 0) + 1
        if first_token_ms is not None:
            self.first_token.add(first_token_ms)
        self.total.add(total_ms)
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens or 0
            self.completion_tokens += usage.completion_tokens or 0
            self.tokens_estimated += usage.estimated
            self.tokens_unknown += usage.unknown
        self.cost_usd += cost_usd

    def to_dict(self) -> TallyJson:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "skipped": self.skipped,
            "failures": {str(k): v for k, v in self.failures.items() if v},
            "latency_first_token": self.first_token.to_dict(),
            "latency_total": self.total.to_dict(),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_estimated": self.tokens_estimated,
            "tokens_unknown": self.tokens_unknown,
            "cost_usd": round(self.cost_usd, 6),
        }


class Outcome(NamedTuple):
    """What one attempt did: counted in the daemon's tallies (``Accounting.record``) and as its
    call's ledger row (``attempt_row``)."""

    strategy: str
    backend: str  # NO_BACKEND for a target without one
    status: AttemptStatus
    kind: FailureKind | None = None
    first_token_ms: float | None = None
    total_ms: float = 0.0
    usage: Usage | None = None
    cost_usd: float = 0.0


class Accounting:
    """The tallies since the daemon started, per (strategy, backend): ``/status`` and ``/metrics``.
    The durable figures are the usage ledger's (``stackd.router.ledger``), one row set per call."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str], Tally] = {}

    def record(self, outcome: Outcome) -> None:
        """Count one attempt."""
        strategy, backend, status, kind, first_token_ms, total_ms, usage, cost_usd = outcome
        tally = self.tallies.get((strategy, backend))
        if tally is None:
            tally = self.tallies[(strategy, backend)] = Tally()
        tally.add(status, kind, first_token_ms, total_ms, usage, cost_usd)

    def stats(self) -> list[StrategyRow]:
        return [
            {"strategy": strategy, "backend": backend, **tally.to_dict()}
            for (strategy, backend), tally in sorted(self.tallies.items())
        ]


def attempt_row(outcome: Outcome, request_id: str | None = None) -> UsageRow:
    """One attempt of a call as its row of the usage ledger (what ``Tally.add`` counts, for one)."""
    strategy, backend, status, kind, first_token_ms, total_ms, usage, cost_usd = outcome
    if status == "skipped":
        return UsageRow(strategy, backend, 0, 0, 1, {}, 0.0, 0, 0.0, 0, 0, 0, 0.0, 0, 0, request_id)
    return UsageRow(
        strategy,
        backend,
        1,
        1 if status == "answered" else 0,
        0,
        {str(kind): 1} if kind is not None and status != "answered" else {},
        first_token_ms if first_token_ms is not None else 0.0,
        0 if first_token_ms is None else 1,
        total_ms,
        1,
        (usage.prompt_tokens or 0) if usage is not None else 0,
        (usage.completion_tokens or 0) if usage is not None else 0,
        cost_usd,
        usage.estimated if usage is not None else 0,
        usage.unknown if usage is not None else 0,
        request_id,
    )


def call_rows(attempts: list[UsageRow]) -> list[UsageRow]:
    """A call's ledger rows: one per (strategy, backend) it tried, its attempts there added up."""
    if len(attempts) < 2 or len({(a.strategy, a.backend) for a in attempts}) == len(attempts):
        return attempts  # each pair tried once: most calls
    rows: dict[tuple[str, str], UsageRow] = {}
    for attempt in attempts:
        key = (attempt.strategy, attempt.backend)
        row = rows.get(key)
        rows[key] = attempt if row is None else _added(row, attempt)
    return list(rows.values())


def _added(row: UsageRow, more: UsageRow) -> UsageRow:
    failures = dict(row.failures)
    for kind, count in more.failures.items():
        failures[kind] = failures.get(kind, 0) + count
    return UsageRow(
        row.strategy,
        row.backend,
        row.requests + more.requests,
        row.answered + more.answered,
        row.skipped + more.skipped,
        failures,
        row.first_token_ms_sum + more.first_token_ms_sum,
        row.first_token_count + more.first_token_count,
        row.total_ms_sum + more.total_ms_sum,
        row.total_count + more.total_count,
        row.prompt_tokens + more.prompt_tokens,
        row.completion_tokens + more.completion_tokens,
        row.cost_usd + more.cost_usd,
        row.tokens_estimated + more.tokens_estimated,
        row.tokens_unknown + more.tokens_unknown,
        row.request_id,
    )
