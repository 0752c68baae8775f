"""Which idle on-demand members to stop so that another one fits: the cheapest set. Pure.

Peers evict by recency or by name (Ollama's scheduler evicts the least recently used runner and
leaves "BySize" as a TODO; llama-swap needs its eviction costs declared by hand). Here the
choice is the set of candidates whose memory covers the deficit while freeing the least, so that
as much as possible stays warm; ties go to the set whose most recent use is the oldest, then to
the smaller set, then to names (deterministic). Callers pass only candidates that may go (idle,
unleased, on demand): never a leased or an always-on member.

The search is exact over every subset of up to ``MAX_EXACT`` candidates (2^12 sums, each one
addition from a smaller subset: about 1 ms for 12 candidates on the development VM, where a card
holds a handful of models; it runs on the event loop, in the manager's worker); beyond that it searches the
``MAX_EXACT`` least recently used and, if those cannot cover the deficit, falls back to stopping
least recently used first until it fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_EXACT = 12


@dataclass(frozen=True)
class Candidate:
    """A member that may be stopped: its budgeted MiB and when it last served (None: never)."""

    model: str
    mib: int
    last_used: float | None = None


def _recency(candidate: Candidate) -> float:
    return -math.inf if candidate.last_used is None else candidate.last_used


def _key(subset: Sequence[Candidate]) -> tuple[int, float, int, tuple[str, ...]]:
    return (
        sum(c.mib for c in subset),
        max(_recency(c) for c in subset),
        len(subset),
        tuple(sorted(c.model for c in subset)),
    )


def cheapest_eviction(candidates: Sequence[Candidate], deficit_mib: int) -> tuple[Candidate, ...] | None:
    """The set to stop so that ``deficit_mib`` more MiB are free, least recently used first; ``()``
    when nothing is short, ``None`` when even all the candidates together free too little."""
    if deficit_mib <= 0:
        return ()
    if sum(c.mib for c in candidates) < deficit_mib:
        return None
    pool = sorted(candidates, key=lambda c: (_recency(c), c.model))
    exact, rest = pool[:MAX_EXACT], pool[MAX_EXACT:]
    # The sum of every subset (bit i: exact[i]), each from a smaller one: 2^n additions.
    sums = [0] * (1 << len(exact))
    for mask in range(1, len(sums)):
        low = mask & -mask
        sums[mask] = sums[mask ^ low] + exact[low.bit_length() - 1].mib
    covering = [total for total in sums if total >= deficit_mib]
    best: tuple[Candidate, ...] | None = None
    if covering:
        least = min(covering)
        ties = [
            tuple(c for i, c in enumerate(exact) if mask >> i & 1)
            for mask, total in enumerate(sums)
            if total == least
        ]
        best = min(ties, key=_key)
    if best is None:  # only with more than MAX_EXACT candidates: least recently used first
        chosen: list[Candidate] = []
        for candidate in [*exact, *rest]:
            chosen.append(candidate)
            if sum(c.mib for c in chosen) >= deficit_mib:
                break
        best = tuple(chosen)
    return tuple(sorted(best, key=lambda c: (_recency(c), c.model)))
