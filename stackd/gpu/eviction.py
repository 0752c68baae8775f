"""Which idle on-demand members to stop so that another one fits: the cheapest set. Pure.

Peers evict by recency or by name (Ollama's scheduler evicts the least recently used runner and
leaves "BySize" as a TODO; llama-swap needs its eviction costs declared by hand). Here the
choice is the set of candidates whose memory covers the deficit while freeing the least, so that
as much as possible stays warm; ties go to the set whose most recent use is the oldest, then to
the smaller set, then to names (deterministic). Callers pass only candidates that may go (idle,
unleased, on demand): never a leased or an always-on member.

The search is exact over every subset of up to ``MAX_EXACT`` candidates (2^12 sums: well under
a millisecond in practice, where a card holds a handful of models); beyond that it searches the
``MAX_EXACT`` least recently used and, if those cannot cover the deficit, falls back to stopping
least recently used first until it fits.
"""

from __future__ import annotations

import itertools
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
    best: tuple[Candidate, ...] | None = None
    for size in range(1, len(exact) + 1):
        for subset in itertools.combinations(exact, size):
            if sum(c.mib for c in subset) >= deficit_mib and (best is None or _key(subset) < _key(best)):
                best = subset
    if best is None:  # only with more than MAX_EXACT candidates: least recently used first
        chosen: list[Candidate] = []
        for candidate in [*exact, *rest]:
            chosen.append(candidate)
            if sum(c.mib for c in chosen) >= deficit_mib:
                break
        best = tuple(chosen)
    return tuple(sorted(best, key=lambda c: (_recency(c), c.model)))
