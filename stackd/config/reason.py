"""The ``reason:`` section (the chain's strategies, effort rules, timeouts, breaker, local queue) and ``presets:``."""

from __future__ import annotations

from pydantic import Field, model_validator

from stackd.config.fields import SECONDS_PER_DAY, Frozen, Name
from stackd.config.slices import SliceRouting


class Strategy(Frozen):
    """A step of the reason() chain: the models it may use, tried in order if in the active stack."""

    description: str = ""
    role: Name | None = Field(None, description="Use the model bound to this role in the active stack.")
    models: list[Name] = Field(default_factory=list, description="Use these models, in order, when members.")
    queued: bool = Field(False, description="Send through the bounded low-priority local queue (strategy 4).")
    allow_empty: bool = Field(
        False,
        description="Accept an answer with no text (blank or whitespace only) as this strategy's "
        "answer; by default it is a failure of kind empty and the chain moves on.",
    )

    @model_validator(mode="after")
    def _has_target(self) -> Strategy:
        if not self.role and not self.models:
            raise ValueError("a strategy has no backend; set 'role: ROLE' or 'models: [MODEL, ...]'")
        return self


class Timeouts(Frozen):
    # A TCP connect that takes minutes is a host that is not there.
    connect_s: float = Field(2.0, gt=0, le=300, description="Seconds to open a connection to a backend.")
    first_token_s: float = Field(
        30.0, gt=0, le=SECONDS_PER_DAY, description="Seconds until the first token of an answer."
    )
    total_s: float = Field(300.0, gt=0, le=SECONDS_PER_DAY, description="Seconds one call may take in all.")


class CircuitBreaker(Frozen):
    failure_threshold: int = Field(3, ge=1, description="Consecutive failures that open a backend's circuit.")
    cooldown_s: float = Field(
        30.0, gt=0, le=SECONDS_PER_DAY, description="Seconds before one half-open trial request."
    )


class EffortRule(Frozen):
    up_to: int = Field(ge=1, le=10, description="This rule applies to efforts <= up_to (first match wins).")
    chain: list[Name] | None = Field(None, description="Strategy order; null means the active stack's chain.")


class LocalQueue(Frozen):
    size: int = Field(16, ge=1, description="Waiting fallback calls beyond which strategy 4 refuses at once.")
    concurrency: int = Field(1, ge=1, description="Fallback calls run at once on the local GPU model.")


class ReasonConfig(Frozen):
    strategies: dict[Name, Strategy] = Field(default_factory=dict)
    default_chain: list[Name] = Field(default_factory=list)
    effort: list[EffortRule] = Field(default_factory=list)
    timeouts: Timeouts = Timeouts()
    circuit: CircuitBreaker = CircuitBreaker()
    local_queue: LocalQueue = LocalQueue()


class Preset(Frozen):
    """A name the orchestrator passes to invoke_model: a role, a model, or an elastic model's slices."""

    description: str = ""
    role: Name | None = None
    model: Name | None = None
    slices: dict[str, Name] = Field(default_factory=dict, description="slice (6b, 9b, 12b) -> model.")
    default_slice: str | None = None
    routing: SliceRouting | None = Field(
        None, description="Route calls of the bare preset name to a slice (stackd/router/slices/)."
    )
    allow_empty: bool = Field(
        False,
        description="Accept an answer with no text (blank or whitespace only); by default it is a "
        "failure of kind empty, reported with the attempts.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> Preset:
        targets = sum(bool(x) for x in (self.role, self.model, self.slices))
        if targets != 1:
            raise ValueError("a preset needs exactly one target; keep one of 'role', 'model' or 'slices'")
        if self.slices and self.default_slice not in self.slices:
            raise ValueError(f"default_slice is not a slice; set it to one of {sorted(self.slices)}")
        if self.routing is not None and sorted(self.routing.order) != sorted(self.slices):
            raise ValueError(
                f"routing.order must list every slice once, smallest first: {sorted(self.slices)}"
            )
        return self
