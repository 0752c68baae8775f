"""The usage ledger as time series per backend: what the status page charts. Pure, no I/O.

``usage_series`` cuts ``[now - window_s, now)`` into buckets of ``bucket_s`` and fills, per
backend and bucket: ``calls`` (attempts sent), ``failures`` (attempts that failed, any kind),
``tokens`` (completion tokens), ``tokens_per_s`` (completion tokens over the seconds spent
answering them: the generation rate while busy, not per wall-clock second) and ``p50_ms`` /
``p95_ms`` (nearest-rank percentiles of the calls' latencies, one sample per ledger row: a row
is one call's attempts at one backend). A bucket without a call has 0 calls and ``None`` for the
rates, so a chart draws a gap rather than a false zero. A backend that was only skipped has
no series. Rows of no backend (``-``: a strategy
that resolved to no model) are left out: nothing ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

from stackd.errors import StackdError

# (ts, backend, requests, failures, total_ms_sum, total_count, completion_tokens): UsageStore.samples
Sample = tuple[float, str, int, int, float, int, int]
NO_BACKEND = "-"
MAX_BUCKETS = 1440


class SeriesRefused(StackdError):
    """A window or bucket the series cannot be cut into (422)."""

    status = 422


class BackendSeries(TypedDict):
    """One backend's columns, one value per bucket (None: no figure in that bucket, not a zero)."""

    calls: list[int]
    failures: list[int]
    tokens: list[int]
    tokens_per_s: list[float | None]
    p50_ms: list[float | None]
    p95_ms: list[float | None]


class UsageSeries(TypedDict):
    """``GET /usage/series``: buckets of ``bucket_s`` from ``start``, per backend that sent."""

    start: float
    bucket_s: float
    buckets: int
    backends: dict[str, BackendSeries]


@dataclass
class _Bucket:
    """What one backend's samples add up to in one bucket."""

    calls: int = 0
    failures: int = 0
    tokens: int = 0
    ms: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def rate(self) -> float | None:
        return round(self.tokens / (self.ms / 1000), 2) if self.ms > 0 and self.tokens else None

    def rank(self, share: float) -> float | None:
        return round(percentile(self.latencies, share), 1) if self.latencies else None


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def usage_series(samples: Iterable[Sample], now: float, window_s: float, bucket_s: float) -> UsageSeries:
    if bucket_s <= 0 or window_s <= 0:
        raise SeriesRefused(f"window_s and bucket_s must be positive (got {window_s} and {bucket_s})")
    # At most MAX_BUCKETS: a finer bucket than the window allows is widened (the answer's
    # bucket_s says which was used), as a chart asks for its width, not for a refusal.
    bucket_s = max(bucket_s, window_s / MAX_BUCKETS)
    count = min(math.ceil(window_s / bucket_s), MAX_BUCKETS)
    start = now - count * bucket_s
    cells: dict[str, list[_Bucket]] = {}
    for ts, backend, requests, failures, ms_sum, ms_count, tokens in samples:
        index = math.floor((ts - start) / bucket_s)
        if backend == NO_BACKEND or not 0 <= index < count:
            continue
        cell = cells.setdefault(backend, [_Bucket() for _ in range(count)])[index]
        cell.calls += requests
        cell.failures += failures
        cell.tokens += tokens
        cell.ms += ms_sum
        if ms_count:
            cell.latencies.append(ms_sum / ms_count)
    return {
        "start": start,
        "bucket_s": bucket_s,
        "buckets": count,
        # a backend only skipped (no key, not in the stack) sent nothing: it has no chart
        "backends": {name: _columns(rows) for name, rows in sorted(cells.items()) if _sent(rows)},
    }


def _sent(rows: list[_Bucket]) -> bool:
    return any(c.calls or c.failures for c in rows)


def _columns(rows: list[_Bucket]) -> BackendSeries:
    return {
        "calls": [c.calls for c in rows],
        "failures": [c.failures for c in rows],
        "tokens": [c.tokens for c in rows],
        "tokens_per_s": [c.rate() for c in rows],
        "p50_ms": [c.rank(0.5) for c in rows],
        "p95_ms": [c.rank(0.95) for c in rows],
    }
