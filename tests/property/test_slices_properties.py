"""Slice routing invariants, over random answers, controls and signals:

- a call is never served by a slice below the one it was pinned to (a named slice, a pinned
  caller, a time pin, the kill switch's largest);
- a call's slices only go up (a tool-call retry stays; nothing comes back down).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackd.errors import AllStrategiesFailed
from stackd.router.slices import SliceRequest
from stackd.router.types import ChatRequest
from tests.budget import examples
from tests.unit.slice_world import PERSON_FORMAT, WEATHER_TOOL, world

ORDER = ["6b", "9b", "12b"]
MIDNIGHT = 1_764_547_200.0
ANSWERS = {
    "valid": '{"name": "Ada", "age": 3}',
    "invalid": "prose",
    "tool_ok": json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}}),
    "tool_bad": json.dumps({"name": "get_weather", "arguments": {}}),
    "down": None,
}
slice_names = st.sampled_from(ORDER)
answer_lists = st.lists(st.sampled_from(sorted(ANSWERS)), min_size=1, max_size=6)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "answers": {s: draw(answer_lists) for s in ORDER},
        "named": draw(st.none() | slice_names),
        "caller": draw(st.none() | st.sampled_from(["pinned", "pinned_promotes", "someone"])),
        "caller_slice": draw(slice_names),
        "pin": draw(st.none() | slice_names),
        "hour": draw(st.integers(0, 23)),
        "kill": draw(st.booleans()),
        "budget_12b": draw(st.none() | st.integers(1, 60)),
        "effort": draw(st.none() | st.integers(1, 10)),
        "tools": draw(st.booleans()),
        "calls": draw(st.integers(1, 3)),
    }


def floor_of(s: dict[str, Any]) -> str:
    if s["kill"]:
        return "12b"
    if s["caller"] in {"pinned", "pinned_promotes"}:
        return str(s["caller_slice"])
    if s["named"] is not None:
        return str(s["named"])
    if s["pin"] is not None and 2 <= s["hour"] < 4:
        return str(s["pin"])
    return "6b"


async def run(s: dict[str, Any]) -> list[tuple[str, list[str], list[str]]]:
    queues = {k: list(v) for k, v in s["answers"].items()}

    def script(slice_name: str, _: ChatRequest) -> str | None:
        queue = queues[slice_name]
        return ANSWERS[queue.pop(0) if len(queue) > 1 else queue[0]]

    changes: dict[str, Any] = {
        "callers": {
            "pinned": {"slice": s["caller_slice"]},
            "pinned_promotes": {"slice": s["caller_slice"], "promote": True},
        },
    }
    if s["pin"] is not None:
        changes["pins"] = [{"slice": s["pin"], "start": "02:00", "end": "04:00"}]
    if s["budget_12b"] is not None:
        changes["settings"] = {"12b": {"budget": {"tokens_per_day": s["budget_12b"]}}}
    slices, _ = world(script, clock=lambda: MIDNIGHT + s["hour"] * 3600 + 60, **changes)
    slices.controls.set_kill_switch(s["kill"])
    request = SliceRequest(
        ChatRequest([{"role": "user", "content": "q"}]),
        PERSON_FORMAT,
        [WEATHER_TOOL] if s["tools"] else None,
        effort=s["effort"],
        caller=s["caller"],
    )
    served: list[tuple[str, list[str], list[str]]] = []
    for _ in range(s["calls"]):
        try:
            sliced = await slices.complete("elastic", s["named"], request)
        except AllStrategiesFailed:
            continue
        served.append((sliced.slice, [t.slice for t in sliced.tries], [str(t.outcome) for t in sliced.tries]))
    return served


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_never_below_the_pin_and_promotions_only_go_up(s: dict[str, Any]) -> None:
    floor = ORDER.index(floor_of(s))
    for served, tried, outcomes in asyncio.run(run(s)):
        assert ORDER.index(served) >= floor, (served, tried, outcomes)
        ranks = [ORDER.index(t) for t in tried]
        assert ranks == sorted(ranks), (tried, outcomes)
        assert all(r >= floor for r in ranks), (tried, floor)
        for (a, b), outcome in zip(itertools.pairwise(tried), outcomes, strict=False):
            if outcome == "retried":
                assert a == b
        if s["kill"]:
            assert set(tried) == {"12b"}
