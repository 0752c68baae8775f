"""The attempts of one call, recorded as they happen into the call's list and the accounting.

A record only: the router decides (whether to skip a target, and why: ``skips.py``; what a
failure does to the backend's circuit: ``ReasonRouter._failed``) and then tells the log.
"""

from __future__ import annotations

import time

from stackd.config.models import StacksConfig
from stackd.errors import AllStrategiesFailed, OutputUnsupported
from stackd.logs.request_id import REQUEST_ID
from stackd.router.accounting import NO_BACKEND, Accounting, Outcome, attempt_row, call_rows
from stackd.router.recent import RecentCalls
from stackd.router.routes import Route, Target
from stackd.router.types import Answer, Attempt, BackendError, Usage
from stackd.state.usage import UsageRow


class AttemptLog:
    __slots__ = ("_accounting", "_config", "_recent", "_rows", "attempts", "route", "unsupported")

    def __init__(
        self, route: Route, config: StacksConfig, accounting: Accounting, recent: RecentCalls | None = None
    ) -> None:
        """``recent`` receives the call once it ends (answered, failed, or a stream broken)."""
        self.route = route
        self._config = config
        self._accounting = accounting
        self._recent = recent
        self.attempts: list[Attempt] = []
        self.unsupported = 0  # the skips for a contract the backend cannot honour
        self._rows: list[UsageRow] = []  # this call's attempts not yet handed to the ledger

    def rows(self) -> list[UsageRow]:
        """The call's ledger rows, stamped with its request id; each attempt is handed out once."""
        attempts, self._rows = self._rows, []
        return call_rows(attempts)

    def _count(self, outcome: Outcome) -> None:
        """One attempt into the daemon's accounting and this call's ledger rows."""
        self._accounting.record(outcome)
        self._rows.append(attempt_row(outcome, REQUEST_ID.get()))

    def skipped(self, target: Target, reason: str, unsupported: bool = False) -> None:
        """``unsupported``: the backend cannot honour the request's response_format or tools."""
        self.unsupported += unsupported
        self.attempts.append(Attempt(target.strategy, target.model, "skipped", reason))
        self._count(Outcome(target.strategy, target.model or NO_BACKEND, "skipped"))

    def failed(
        self,
        target: Target,
        error: BackendError,
        start: float,
        first_token_ms: float | None,
        *,
        broken: bool | None = None,
        usage: Usage | None = None,
    ) -> None:
        """``broken``: text had reached the caller, so the call ends here (default: a first token
        came); ``usage``: what a failed answer still cost (an empty one), counted and priced."""
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.attempts.append(
            Attempt(target.strategy, target.model, "failed", str(error), elapsed_ms, error.kind)
        )
        cost = self.cost(target.model, usage) if usage is not None and target.model else 0.0
        backend = target.model or NO_BACKEND
        self._count(
            Outcome(target.strategy, backend, "failed", error.kind, first_token_ms, elapsed_ms, usage, cost)
        )
        if broken is None:
            broken = first_token_ms is not None
        if broken and self._recent is not None:  # a stream broke: the call ends
            self._recent.record(self.route.label, "broken", self.attempts)

    def answered(
        self,
        target: Target,
        request_model: str,
        text: str,
        finish_reason: str,
        usage: Usage,
        first_token_ms: float,
        total_ms: float,
    ) -> Answer:
        backend = target.model or NO_BACKEND
        cost = self.cost(backend, usage)
        self.attempts.append(Attempt(target.strategy, backend, "answered", "answered", total_ms))
        self._count(
            Outcome(target.strategy, backend, "answered", None, first_token_ms, total_ms, usage, cost)
        )
        if self._recent is not None:
            self._recent.record(self.route.label, "answered", self.attempts)
        return Answer(
            text, finish_reason, target.strategy, backend, request_model, usage, tuple(self.attempts), cost
        )

    def all_failed(self) -> AllStrategiesFailed:
        """The 503 of a call whose every target failed or was skipped, listing each reason."""
        if self._recent is not None:
            self._recent.record(self.route.label, "failed", self.attempts)
        listing = "; ".join(
            f"{a.strategy} ({a.backend or '-'}) {a.status}: {a.reason}" for a in self.attempts
        )
        if self.attempts and self.unsupported == len(self.attempts):
            return OutputUnsupported(
                f"{self.route.label}: no backend of this route can honour the request's "
                f"response_format or tools: {listing}",
                attempts=[a.to_dict() for a in self.attempts],
                code="unsupported_parameter",
            )
        return AllStrategiesFailed(
            f"{self.route.label}: every strategy failed or was skipped: {listing or 'the route is empty'}",
            attempts=[a.to_dict() for a in self.attempts],
        )

    def cost(self, model: str, usage: Usage) -> float:
        """USD for ``usage`` at the model's configured price (0 without one); an unknown count
        costs nothing here (the usage table counts such answers in ``tokens_unknown``)."""
        spec = self._config.models.get(model)
        if spec is None or spec.price is None:
            return 0.0
        price = spec.price
        return (
            (usage.prompt_tokens or 0) * price.input_per_mtok
            + (usage.completion_tokens or 0) * price.output_per_mtok
        ) / 1e6
