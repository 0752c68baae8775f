"""The SliceRouter: runs a routed call over the slices of an elastic preset.

estimate (pure) -> plan_start (pure, with the controls' state) -> for each slice: the slice's
request (template, sampling) through the ReasonRouter's preset route -> validate -> accept, retry
a failed tool call on the same slice (``tool_retries``), or promote to ``next_slice``. A slice the
router cannot serve (not in the stack, every attempt failed) is left for the next one too. Then
the answer is recorded: tallies, the day's tokens of the slice, the audit row, a regret replay.

Each slice's request carries the call's ``response_format`` and ``tools``, so an engine that
constrains decoding produces what the validator then checks (an engine's ``tool_calls`` are
checked as the call they are).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from stackd.config.models import StacksConfig
from stackd.config.reason import Preset
from stackd.config.slices import SliceRouting
from stackd.errors import AllStrategiesFailed
from stackd.router.backends.contract import tool_call_text
from stackd.router.routes import Route
from stackd.router.slices.controls import SliceControls, day_start
from stackd.router.slices.digests import DigestSource, ModelDigests
from stackd.router.slices.estimator import estimate, signals_of
from stackd.router.slices.policy import Start, active_pin, next_slice, plan_start
from stackd.router.slices.prompts import slice_request, template_of
from stackd.router.slices.regret import RegretJob, RegretReplayer
from stackd.router.slices.stats import SliceStats
from stackd.router.slices.types import SlicedAnswer, SliceRequest, SliceTry
from stackd.router.slices.validators import AnswerValidator, Verdict
from stackd.router.types import Answer, ChatRequest
from stackd.state.slice_audit import AuditRecord, SliceAudit
from stackd.state.usage import UsageStore

log = logging.getLogger("stackd.router.slices")


def checked_text(answer: Answer) -> str:
    """What the validators read: the engine's first tool call, as a call in text, or the text."""
    return tool_call_text(answer.tool_calls) if answer.tool_calls else answer.text


class ChatRouter(Protocol):
    """What the slice router needs of the ReasonRouter."""

    @property
    def config(self) -> StacksConfig: ...  # the live config, read per call

    def preset_route(self, preset: str, slice_name: str | None = None) -> Route: ...

    async def complete(self, route: Route, request: ChatRequest) -> Answer: ...


def routed_preset(config: StacksConfig, model: str) -> tuple[str, str | None, Preset] | None:
    """(preset, named slice or None, preset) when ``model`` names a preset with ``routing``."""
    name, _, slice_name = model.partition(":")
    preset = config.presets.get(name)
    if preset is None or preset.routing is None or (slice_name and slice_name not in preset.slices):
        return None
    return name, slice_name or None, preset


def slice_spending(by_strategy: dict[str, int]) -> dict[tuple[str, str], int]:
    """(preset, slice) -> tokens, from the ledger's strategies: a slice's calls are
    ``preset:<preset>:<slice>`` (``routes.preset_route``); a preset's own route has no slice."""
    spent: dict[tuple[str, str], int] = {}
    for strategy, tokens in by_strategy.items():
        _, preset, slice_name = [*strategy.split(":", 2), "", ""][:3]
        if preset and slice_name:
            spent[(preset, slice_name)] = spent.get((preset, slice_name), 0) + tokens
    return spent


class SliceRouter:
    def __init__(
        self,
        router: ChatRouter,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._router = router
        self._clock = clock
        self.controls = SliceControls(clock)
        self.stats = SliceStats()
        self.audit: SliceAudit | None = None
        self.digests: DigestSource = ModelDigests(lambda: self._router.config, None)
        self.regret = RegretReplayer(self.stats.regret, clock, rng)

    def attach(
        self,
        audit: SliceAudit | None,
        state_dir: Path | None,
        digests: DigestSource | None = None,
        usage: UsageStore | None = None,
    ) -> None:
        """The daemon's audit table, state dir (where process members' model files are) and usage
        ledger (today's spending of each slice is read back from it)."""
        self.audit = audit
        self.digests = digests or ModelDigests(lambda: self._router.config, state_dir)
        if usage is not None:
            self.controls.restore(slice_spending(usage.strategy_tokens("preset:", day_start(self._clock()))))

    def routed(self, model: str) -> tuple[str, str | None, Preset] | None:
        return routed_preset(self._router.config, model)

    def routings(self) -> dict[str, SliceRouting]:
        return {n: p.routing for n, p in self._router.config.presets.items() if p.routing is not None}

    async def complete(self, preset_name: str, named: str | None, request: SliceRequest) -> SlicedAnswer:
        preset = self._router.config.presets[preset_name]
        routing = preset.routing
        assert routing is not None, "complete() is for presets with routing (see routed())"
        contract = (request.response_format, request.tools, request.tool_choice)
        chat = replace(request.chat, response_format=contract[0], tools=contract[1], tool_choice=contract[2])
        request = replace(request, chat=chat)
        validator = AnswerValidator(request.response_format, request.tools, request.tool_choice)
        signals = signals_of(request.chat.messages, request.tools, request.retrieved_chunks, request.effort)

        def over_budget(slice_name: str) -> str | None:
            return self.controls.over_budget(routing, preset_name, slice_name)

        start = plan_start(
            routing,
            estimate(routing, signals),
            kill_switch=self.controls.kill_switch,
            caller=request.caller,
            named=named,
            time_pin=active_pin(routing, self._clock()),
            over_budget=over_budget,
        )
        for origin, to, why in start.falls:
            log.warning(
                "slice budget: %s:%s has no room (%s); the call falls to %s", preset_name, origin, why, to
            )
        began = time.perf_counter()
        answer, verdict, tries = await self._run(preset_name, routing, start, validator, request, over_budget)
        latency_ms = (time.perf_counter() - began) * 1000
        served = next(t.slice for t in reversed(tries) if t.backend is not None)  # the answer's try
        sliced = SlicedAnswer(
            answer,
            preset_name,
            served,
            start.decided_by,
            start.reason,
            signals.to_dict(),
            routing.policy_version,
            await self.digests.digest(answer.backend),
            verdict.ok,
            verdict.check,
            tuple(tries),
            verdict.tool_call,
            start.falls,
        )
        self.stats.record(sliced, latency_ms)
        if self.audit is not None:
            sliced = await self._audited(sliced, latency_ms)
        self._offer_regret(preset_name, routing, sliced, validator, request, start)
        return sliced

    async def _call(
        self,
        preset: str,
        routing: SliceRouting,
        slice_name: str,
        validator: AnswerValidator,
        request: SliceRequest,
        temperature: float | None,
    ) -> tuple[Answer | AllStrategiesFailed, float]:
        """One call of one slice (its answer, or why no strategy answered), and its milliseconds."""
        chat = slice_request(routing, slice_name, request.chat, validator.schema, request.tools, temperature)
        began = time.perf_counter()
        self.controls.admit(preset, slice_name)
        try:
            answer = await self._router.complete(self._router.preset_route(preset, slice_name), chat)
        except AllStrategiesFailed as exc:
            return exc, (time.perf_counter() - began) * 1000
        return answer, (time.perf_counter() - began) * 1000

    async def _run(
        self,
        preset: str,
        routing: SliceRouting,
        start: Start,
        validator: AnswerValidator,
        request: SliceRequest,
        over_budget: Callable[[str], str | None],
    ) -> tuple[Answer, Verdict, list[SliceTry]]:
        tries: list[SliceTry] = []
        current: str | None = start.slice
        retries_left = routing.tool_retries
        last: tuple[Answer, Verdict] | None = None
        while current is not None:
            template = template_of(routing, current)
            answer, ms = await self._call(preset, routing, current, validator, request, start.temperature)
            if isinstance(answer, AllStrategiesFailed):
                tries.append(SliceTry(current, None, "unavailable", answer.message[:300], ms, template))
                current, passed = self._next(routing, current, start, over_budget)
                tries += passed
                continue
            self.controls.spend(preset, current, answer.usage.counted_tokens)
            verdict = validator.check(checked_text(answer))
            last = (answer, verdict)
            if verdict.ok:
                tries.append(SliceTry(current, answer.backend, "accepted", verdict.reason, ms, template))
                return answer, verdict, tries
            if verdict.tool_call_failed and retries_left > 0:
                retries_left -= 1
                why = f"{verdict.reason}; retried on the same slice"
                tries.append(SliceTry(current, answer.backend, "retried", why, ms, template))
                continue
            following, passed = self._next(routing, current, start, over_budget)
            if following is None:
                tries.append(SliceTry(current, answer.backend, "invalid", verdict.reason, ms, template))
                return answer, verdict, [*tries, *passed]
            why = f"{verdict.reason}; promoted to {following}"
            tries.append(SliceTry(current, answer.backend, "promoted", why, ms, template))
            tries += passed
            retries_left = routing.tool_retries
            current = following
        if last is not None:  # a larger slice was unavailable after an invalid answer
            return last[0], last[1], tries
        listing = "; ".join(f"{t.slice}: {t.reason}" for t in tries)
        raise AllStrategiesFailed(
            f"preset:{preset}: no slice answered: {listing}",
            attempts=[t.to_dict() for t in tries],
        )

    @staticmethod
    def _next(
        routing: SliceRouting,
        current: str,
        start: Start,
        over_budget: Callable[[str], str | None],
    ) -> tuple[str | None, list[SliceTry]]:
        """The slice to go to, and a note for each slice passed over (to follow the current try)."""
        if not start.can_promote:
            return None, []
        following, passed = next_slice(routing, current, over_budget)
        return following, [SliceTry(s, None, "unavailable", f"passed over: {why}") for s, why in passed]

    async def _audited(self, sliced: SlicedAnswer, latency_ms: float) -> SlicedAnswer:
        assert self.audit is not None
        usage = sliced.answer.usage
        record = AuditRecord(
            self._clock(),
            sliced.preset,
            sliced.slice,
            sliced.answer.backend,
            sliced.model_digest,
            sliced.policy_version,
            sliced.decided_by,
            sliced.validated,
            sliced.check,
            sliced.promotions,
            [dict(t.to_dict()) for t in sliced.tries],
            usage.prompt_tokens,
            usage.completion_tokens,
            latency_ms,
            "unknown" if usage.unknown else "estimated" if usage.estimated else "reported",
        )
        try:
            audit_id = await asyncio.to_thread(self.audit.write, record)
        except Exception as exc:  # the answer is not lost for a row; the log says it is missing
            log.error("slice audit row not written: %s", exc)
            return sliced
        return replace(sliced, audit_id=audit_id)

    def _offer_regret(
        self,
        preset: str,
        routing: SliceRouting,
        sliced: SlicedAnswer,
        validator: AnswerValidator,
        request: SliceRequest,
        start: Start,
    ) -> None:
        left = next((t.slice for t in sliced.tries if t.outcome == "promoted"), None)
        if left is None or not sliced.validated:
            return
        settings = routing.regret

        async def replay() -> tuple[bool, int]:
            chat = slice_request(
                routing, left, request.chat, validator.schema, request.tools, start.temperature
            )
            answer = await self._router.complete(self._router.preset_route(preset, left), chat)
            return validator.check(checked_text(answer)).ok, answer.usage.counted_tokens

        self.regret.offer(RegretJob(preset, left, replay), settings.sample_rate, settings.tokens_per_day)

    def status(self) -> dict[str, object]:
        routings = self.routings()
        return {
            "presets": {
                n: {"policy_version": r.policy_version, "order": r.order} for n, r in routings.items()
            },
            "controls": self.controls.to_dict(routings),
            "slices": self.stats.to_dict(),
            "regret": {"spent_today": self.regret.spent_today(), "dropped": self.regret.dropped},
        }

    async def aclose(self) -> None:
        await self.regret.aclose()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
