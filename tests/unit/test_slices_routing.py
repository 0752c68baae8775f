"""The slice router: promotion on invalid answers, tool-call retries, templates, the controls."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from stackd.errors import AllStrategiesFailed
from stackd.router.slices import SliceRequest
from stackd.router.types import ChatRequest
from stackd.state.slice_audit import SliceAudit
from tests.unit.slice_world import PERSON_FORMAT, WEATHER_TOOL, FixedDigests, user, world

VALID = '{"name": "Ada", "age": 36}'
MIDNIGHT = 1_764_547_200.0  # 2025-12-01 00:00 UTC
HOUR = 3600.0


def schema_call(text: str = "who?", **fields: object) -> SliceRequest:
    return SliceRequest(user(text), PERSON_FORMAT, **fields)  # type: ignore[arg-type]


def system_of(request: ChatRequest) -> str:
    return str(request.messages[0]["content"]) if request.messages[0]["role"] == "system" else ""


async def test_an_invalid_json_answer_is_promoted_and_the_answer_says_why() -> None:
    slices, scripted = world(lambda s, _: "not json" if s == "6b" else VALID)
    sliced = await slices.complete("elastic", None, schema_call())
    assert scripted.slices_called() == ["6b", "9b"]
    assert (sliced.slice, sliced.validated, sliced.decided_by) == ("9b", True, "default")
    assert [(t.slice, t.outcome) for t in sliced.tries] == [("6b", "promoted"), ("9b", "accepted")]
    assert sliced.tries[0].reason == "the answer is not JSON; promoted to 9b"
    assert sliced.policy_version == "test-1"
    body = sliced.to_dict()
    assert body["tries"][0]["outcome"] == "promoted" and body["slice"] == "9b"


async def test_promotion_switches_from_the_compact_to_the_expressive_template() -> None:
    slices, scripted = world(lambda s, _: VALID if s == "12b" else "{}")
    sliced = await slices.complete("elastic", None, schema_call())
    assert scripted.slices_called() == ["6b", "9b", "12b"]
    systems = [system_of(r) for _, r in scripted.calls]
    assert systems[0].startswith("COMPACT {") and systems[1].startswith("COMPACT {")
    assert systems[2].startswith("EXPRESSIVE {") and '"required": ["name", "age"]' in systems[2]
    assert [t.template for t in sliced.tries] == ["compact", "compact", "expressive"]


async def test_a_failed_tool_call_is_retried_once_on_the_same_slice_then_promoted() -> None:
    bad = json.dumps({"name": "get_weather", "arguments": {"unit": "c"}})  # city missing
    good = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})
    slices, scripted = world(lambda s, _: bad if s == "6b" else good)
    request = SliceRequest(user("weather in Oslo?"), tools=[WEATHER_TOOL])
    sliced = await slices.complete("elastic", None, request)
    assert scripted.slices_called() == ["6b", "6b", "9b"]
    assert [t.outcome for t in sliced.tries] == ["retried", "promoted", "accepted"]
    assert sliced.tool_call is not None and sliced.tool_call.arguments == {"city": "Oslo"}
    assert "'city' is a required property" in sliced.tries[0].reason
    assert "Tools: " in system_of(scripted.calls[0][1])  # the slices are told the tools and the call's shape


async def test_a_retry_that_succeeds_stays_on_the_slice() -> None:
    answers = iter(["{}", json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})])
    slices, scripted = world(lambda s, _: next(answers))
    sliced = await slices.complete(
        "elastic", None, SliceRequest(user(), tools=[WEATHER_TOOL], tool_choice="required")
    )
    assert scripted.slices_called() == ["6b", "6b"] and sliced.slice == "6b" and sliced.validated


async def test_the_largest_slice_invalid_too_returns_its_answer_marked_invalid() -> None:
    slices, scripted = world(lambda s, _: "nope")
    sliced = await slices.complete("elastic", None, schema_call())
    assert scripted.slices_called() == ["6b", "9b", "12b"]
    assert (sliced.slice, sliced.validated, sliced.tries[-1].outcome) == ("12b", False, "invalid")


async def test_the_kill_switch_forces_the_largest_slice_even_for_a_named_one() -> None:
    slices, scripted = world(lambda s, _: VALID)
    slices.controls.set_kill_switch(True, "incident 42")
    sliced = await slices.complete("elastic", "6b", schema_call())
    assert (sliced.slice, sliced.decided_by) == ("12b", "kill_switch")
    slices.controls.set_kill_switch(False)
    assert (await slices.complete("elastic", "6b", schema_call())).slice == "6b"
    assert scripted.slices_called() == ["12b", "6b"]


async def test_a_spent_12b_budget_falls_to_9b_with_a_metric_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {"12b": {"template": "expressive", "budget": {"tokens_per_day": 30}}}
    slices, scripted = world(lambda s, _: VALID, settings=settings)
    hard = schema_call(effort=9)
    first = await slices.complete("elastic", None, hard)  # 20 tokens: room remains
    second = await slices.complete("elastic", None, hard)  # 40 spent after this one
    with caplog.at_level(logging.WARNING, logger="stackd.router.slices"):
        third = await slices.complete("elastic", None, hard)
    assert [first.slice, second.slice, third.slice] == ["12b", "12b", "9b"]
    assert third.falls == (("12b", "9b", "12b: tokens_per_day 30 spent (40 today)"),)
    assert slices.stats.tally("elastic", "12b").budget_falls == 1
    assert "12b has no room" in caplog.text and "falls to 9b" in caplog.text
    assert await slices.complete("elastic", "12b", hard) is not None  # a named slice is not degraded
    assert scripted.slices_called()[-1] == "12b"


async def test_the_budget_is_per_utc_day() -> None:
    now = [MIDNIGHT + 23 * HOUR]
    settings = {"12b": {"budget": {"tokens_per_day": 10}}}
    slices, _ = world(lambda s, _: VALID, clock=lambda: now[0], settings=settings)
    assert (await slices.complete("elastic", None, schema_call(effort=9))).slice == "12b"
    assert (await slices.complete("elastic", None, schema_call(effort=9))).slice == "9b"
    now[0] += 2 * HOUR  # the next day
    assert (await slices.complete("elastic", None, schema_call(effort=9))).slice == "12b"


async def test_a_rate_limit_falls_for_a_minute() -> None:
    now = [MIDNIGHT]
    settings = {"12b": {"budget": {"requests_per_minute": 1}}}
    slices, _ = world(lambda s, _: VALID, clock=lambda: now[0], settings=settings)
    assert (await slices.complete("elastic", None, schema_call(effort=9))).slice == "12b"
    assert (await slices.complete("elastic", None, schema_call(effort=9))).slice == "9b"
    now[0] += 61
    assert (await slices.complete("elastic", None, schema_call(effort=9))).slice == "12b"


@pytest.mark.parametrize(
    ("hour", "expected"),
    # 00:30 is the end of the window that wraps midnight: out of it
    [(0.5, "6b"), (1.0, "12b"), (4.9, "12b"), (5.0, "6b"), (22.5, "9b"), (23.99, "9b")],
)
async def test_time_pins_hold_their_window(hour: float, expected: str) -> None:
    pins = [
        {"slice": "12b", "start": "01:00", "end": "05:00"},
        {"slice": "9b", "start": "22:00", "end": "00:30"},
    ]
    slices, _ = world(lambda s, _: VALID, clock=lambda: MIDNIGHT + hour * HOUR, pins=pins)
    sliced = await slices.complete("elastic", None, schema_call())
    assert sliced.slice == expected
    assert sliced.decided_by == ("time_pin" if expected != "6b" else "default")


async def test_a_time_pin_is_a_floor_the_estimate_may_exceed() -> None:
    pins = [{"slice": "9b", "start": "00:00", "end": "23:59"}]
    slices, _ = world(lambda s, _: VALID, pins=pins)
    sliced = await slices.complete("elastic", None, schema_call(effort=9))
    assert (sliced.slice, sliced.decided_by) == ("12b", "time_pin")


async def test_a_pinned_caller_gets_its_slice_and_temperature_and_no_promotion() -> None:
    callers = {"compliance": {"slice": "9b", "temperature": 0}}
    slices, scripted = world(lambda s, _: "prose", callers=callers)
    request = SliceRequest(
        ChatRequest([{"role": "user", "content": "x"}], temperature=0.9), PERSON_FORMAT, caller="compliance"
    )
    sliced = await slices.complete("elastic", None, request)
    assert scripted.slices_called() == ["9b"]
    assert scripted.calls[0][1].temperature == 0
    assert (sliced.slice, sliced.decided_by, sliced.validated) == ("9b", "caller:compliance", False)


async def test_an_unavailable_slice_is_left_for_the_next_and_none_is_a_503() -> None:
    slices, _scripted = world(lambda s, _: None if s == "6b" else VALID)
    sliced = await slices.complete("elastic", None, schema_call())
    assert [(t.slice, t.outcome) for t in sliced.tries] == [("6b", "unavailable"), ("9b", "accepted")]
    nothing, _ = world(lambda s, _: None)
    with pytest.raises(AllStrategiesFailed) as caught:
        await nothing.complete("elastic", None, schema_call())
    assert "no slice answered" in caught.value.message and len(caught.value.detail["attempts"]) == 3


async def test_the_audit_row_records_slice_digest_policy_and_tries(tmp_path: Path) -> None:
    slices, _ = world(lambda s, _: "x" if s == "6b" else VALID)
    slices.attach(SliceAudit(tmp_path / "stackd.db"), tmp_path, FixedDigests())
    sliced = await slices.complete("elastic", None, schema_call())
    assert slices.audit is not None
    [row] = slices.audit.recent()
    assert row["id"] == sliced.audit_id
    assert (row["slice"], row["backend"], row["policy_version"], row["validated"]) == (
        "9b",
        "elastic-9b",
        "test-1",
        True,
    )
    assert row["model_digest"] == sliced.model_digest == "sha256:digest-of-elastic-9b"
    assert [t["outcome"] for t in row["tries"]] == ["promoted", "accepted"]
    assert slices.audit.summary()[0]["promoted_here"] == 1
    await slices.aclose()


async def test_promotion_regret_replays_on_the_slice_left() -> None:
    answers = {"6b": iter(["bad", VALID]), "9b": iter([VALID])}
    slices, scripted = world(
        lambda s, _: next(answers[s]), regret={"sample_rate": 1.0, "tokens_per_day": 100}
    )
    await slices.complete("elastic", None, schema_call())
    await slices.regret.drain()
    assert scripted.slices_called() == ["6b", "9b", "6b"]
    tally = slices.stats.tally("elastic", "6b")
    assert (tally.regret_replays, tally.regrets) == (1, 1)
    assert slices.regret.spent_today() == 20


async def test_regret_replays_stop_at_their_budget() -> None:
    slices, _scripted = world(
        lambda s, _: "bad" if s == "6b" else VALID, regret={"sample_rate": 1.0, "tokens_per_day": 20}
    )
    for _ in range(3):
        await slices.complete("elastic", None, schema_call())
        await slices.regret.drain()
    assert slices.stats.tally("elastic", "6b").regret_replays == 1  # 20 tokens: one replay
    assert slices.stats.tally("elastic", "6b").regrets == 0
    assert slices.regret.dropped == 2


async def test_a_promotion_passes_over_a_slice_without_budget() -> None:
    settings = {"12b": {"budget": {"tokens_per_day": 1}}}
    slices, scripted = world(lambda s, _: "prose", settings=settings)
    slices.controls.spend("elastic", "12b", 1)
    sliced = await slices.complete("elastic", "9b", schema_call())
    assert scripted.slices_called() == ["9b"]
    assert [(t.slice, t.outcome) for t in sliced.tries] == [("9b", "invalid"), ("12b", "unavailable")]
    assert sliced.slice == "9b" and sliced.tries[1].reason.startswith(
        "passed over: 12b: tokens_per_day 1 spent"
    )
