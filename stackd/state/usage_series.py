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
from typing import Any

from stackd.errors import StackdError

# (ts, backend, requests, failures, total_ms_sum, total_count, completion_tokens): UsageStore.samples
Sample = tuple[float, str, int, int, float, int, int]
NO_BACKEND = "-"
MAX_BUCKETS = 1440


class SeriesRefused(StackdError):
    """A window or bucket the series cannot be cut into (422)."""

    status = 422


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def usage_series(samples: Iterable[Sample], now: float, window_s: float, bucket_s: float) -> dict[str, Any]:
    if bucket_s <= 0 or window_s <= 0:
        raise SeriesRefused(f"window_s and bucket_s must be positive (got {window_s} and {bucket_s})")
    count = math.ceil(window_s / bucket_s)
    if count > MAX_BUCKETS:
        raise SeriesRefused(f"{count} buckets asked ({window_s} s in {bucket_s} s); at most {MAX_BUCKETS}")
    start = now - count * bucket_s
    cells: dict[str, list[dict[str, Any]]] = {}
    for ts, backend, requests, failures, ms_sum, ms_count, tokens in samples:
        index = math.floor((ts - start) / bucket_s)
        if backend == NO_BACKEND or not 0 <= index < count:
            continue
        rows = cells.setdefault(backend, [_empty() for _ in range(count)])
        cell = rows[index]
        cell["calls"] += requests
        cell["failures"] += failures
        cell["tokens"] += tokens
        cell["ms"] += ms_sum
        if ms_count:
            cell["latencies"].append(ms_sum / ms_count)
    return {
        "start": start,
        "bucket_s": bucket_s,
        "buckets": count,
        # a backend only skipped (no key, not in the stack) sent nothing: it has no chart
        "backends": {name: _columns(rows) for name, rows in sorted(cells.items()) if _sent(rows)},
    }


def _sent(rows: list[dict[str, Any]]) -> bool:
    return any(c["calls"] or c["failures"] for c in rows)


def _empty() -> dict[str, Any]:
    return {"calls": 0, "failures": 0, "tokens": 0, "ms": 0.0, "latencies": []}


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    def rate(cell: dict[str, Any]) -> float | None:
        return round(cell["tokens"] / (cell["ms"] / 1000), 2) if cell["ms"] > 0 and cell["tokens"] else None

    def rank(cell: dict[str, Any], share: float) -> float | None:
        return round(percentile(cell["latencies"], share), 1) if cell["latencies"] else None

    return {
        "calls": [c["calls"] for c in rows],
        "failures": [c["failures"] for c in rows],
        "tokens": [c["tokens"] for c in rows],
        "tokens_per_s": [rate(c) for c in rows],
        "p50_ms": [rank(c, 0.5) for c in rows],
        "p95_ms": [rank(c, 0.95) for c in rows],
    }
