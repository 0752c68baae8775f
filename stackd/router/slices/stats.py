"""Per-slice tallies in memory: what /metrics, /status and ``stackd usage`` show of each slice.

Acceptance is the guide's: of the calls that tried a slice, the share whose first answer there
was valid. Cost per 1K tokens is at the slice model's configured price (0 for a local model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stackd.router.accounting import LatencyTally
from stackd.router.slices.types import SlicedAnswer


@dataclass(slots=True)
class SliceTally:
    tried: int = 0  # calls that sent at least one try to this slice
    accepted_first: int = 0  # ... whose first try here was valid
    served: int = 0  # calls answered by this slice
    invalid: int = 0  # tries whose answer failed its validator
    retries: int = 0  # failed tool calls retried on this slice
    promotions: int = 0  # calls promoted away from this slice
    unavailable: int = 0  # tries the router could not serve (no member, every attempt failed)
    budget_falls: int = 0  # calls that fell from this slice to a smaller one (budget, rate)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency: LatencyTally = field(default_factory=LatencyTally)
    regret_replays: int = 0
    regrets: int = 0

    @property
    def acceptance(self) -> float | None:
        return self.accepted_first / self.tried if self.tried else None

    @property
    def cost_per_1k_tokens(self) -> float:
        tokens = self.prompt_tokens + self.completion_tokens
        return self.cost_usd / tokens * 1000 if tokens else 0.0

    def to_dict(self) -> dict[str, object]:
        acceptance = self.acceptance
        return {
            "tried": self.tried,
            "acceptance": round(acceptance, 4) if acceptance is not None else None,
            "served": self.served,
            "invalid": self.invalid,
            "retries": self.retries,
            "promotions": self.promotions,
            "unavailable": self.unavailable,
            "budget_falls": self.budget_falls,
            "latency": self.latency.to_dict(),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "cost_per_1k_tokens_usd": round(self.cost_per_1k_tokens, 6),
            "regret_replays": self.regret_replays,
            "regrets": self.regrets,
        }


class SliceStats:
    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str], SliceTally] = {}  # (preset, slice)

    def tally(self, preset: str, slice_name: str) -> SliceTally:
        return self.tallies.setdefault((preset, slice_name), SliceTally())

    def record(self, sliced: SlicedAnswer, latency_ms: float) -> None:
        seen: set[str] = set()
        for t in sliced.tries:
            tally = self.tally(sliced.preset, t.slice)
            if t.slice not in seen:
                seen.add(t.slice)
                tally.tried += 1
                tally.accepted_first += t.outcome == "accepted"
            tally.invalid += t.outcome in {"invalid", "promoted", "retried"} and t.backend is not None
            tally.retries += t.outcome == "retried"
            tally.promotions += t.outcome == "promoted"
            tally.unavailable += t.outcome == "unavailable"
        for origin, _, _ in sliced.falls:
            self.tally(sliced.preset, origin).budget_falls += 1
        served = self.tally(sliced.preset, sliced.slice)
        served.served += 1
        served.prompt_tokens += sliced.answer.usage.prompt_tokens or 0  # an unknown count adds none
        served.completion_tokens += sliced.answer.usage.completion_tokens or 0
        served.cost_usd += sliced.answer.cost_usd
        served.latency.add(latency_ms)

    def regret(self, preset: str, slice_name: str, would_have_validated: bool) -> None:
        tally = self.tally(preset, slice_name)
        tally.regret_replays += 1
        tally.regrets += would_have_validated

    def to_dict(self) -> dict[str, object]:
        return {f"{p}:{s}": t.to_dict() for (p, s), t in sorted(self.tallies.items())}
