"""The difficulty estimator: each signal against its thresholds, and the signal that decided."""

from __future__ import annotations

from typing import Any

import pytest

from stackd.router.slices.estimator import Signals, estimate, prompt_tokens, signals_of, tool_depth
from tests.unit.slice_world import WEATHER_TOOL, routing


@pytest.mark.parametrize(
    ("signals", "expected", "signal"),
    [
        (Signals(), "6b", None),
        (Signals(prompt_tokens=99), "6b", None),
        (Signals(prompt_tokens=100), "9b", "prompt_tokens"),
        (Signals(prompt_tokens=399), "9b", "prompt_tokens"),
        (Signals(prompt_tokens=400), "12b", "prompt_tokens"),
        (Signals(retrieved_chunks=2), "6b", None),
        (Signals(retrieved_chunks=3), "9b", "retrieved_chunks"),
        (Signals(retrieved_chunks=6), "12b", "retrieved_chunks"),
        (Signals(tool_depth=1), "6b", None),
        (Signals(tool_depth=2), "9b", "tool_depth"),
        (Signals(tool_depth=4), "12b", "tool_depth"),
        (Signals(effort=5), "6b", None),
        (Signals(effort=6), "9b", "effort"),
        (Signals(effort=9), "12b", "effort"),
    ],
)
def test_each_signal_reaches_its_slice_at_its_threshold(
    signals: Signals, expected: str, signal: str | None
) -> None:
    result = estimate(routing(), signals)
    assert (result.slice, result.signal) == (expected, signal)


def test_the_largest_slice_needed_wins_and_names_its_signal() -> None:
    result = estimate(routing(), Signals(prompt_tokens=150, retrieved_chunks=7, effort=6))
    assert (result.slice, result.signal, result.value, result.threshold) == ("12b", "retrieved_chunks", 7, 6)
    assert result.reason == "retrieved_chunks 7 >= 6"


def test_thresholds_come_from_config() -> None:
    strict = routing(thresholds={"12b": {"effort": 2}})
    assert estimate(strict, Signals(effort=2)).slice == "12b"
    assert estimate(strict, Signals(prompt_tokens=10_000)).slice == "6b"  # no prompt threshold set


def test_prompt_tokens_count_every_message_and_text_parts() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "a" * 40},
        {"role": "user", "content": [{"type": "text", "text": "b" * 41}, {"type": "image_url"}]},
    ]
    assert prompt_tokens(messages) == 21  # 81 characters / 4, rounded up


def test_tool_depth_counts_the_tools_offered_and_earlier_tool_turns() -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "1"}, {"id": "2"}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rain"},
    ]
    assert tool_depth(history, None) == 4
    assert tool_depth(history, [WEATHER_TOOL]) == 5
    assert tool_depth([{"role": "user", "content": "x"}], []) == 0
    assert signals_of(history, [WEATHER_TOOL], 2, 7) == Signals(prompt_tokens(history), 2, 5, 7)
