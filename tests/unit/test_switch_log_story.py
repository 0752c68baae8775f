"""The daemon's log tells a switch's story: a line when it starts, one per step with its duration,
one at its outcome, each with the switch's id; and its JSON lines carry no ANSI code and no
uvicorn ``color_message``."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from stackd.logs.records import JsonLines, Masking
from stackd.manager.events import EventLog


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines(Masking([])))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_one_switch_reads_as_a_story_in_order_with_its_id(json_log: io.StringIO) -> None:
    clock = iter([100.0, 100.0, 101.5, 102.0, 102.9, 103.4]).__next__
    events = EventLog("abc123", clock, "to 'embedded' from '(none)' (switch)")
    start = {"kind": "start_process", "model": "smollm2-135m"}
    bind = {"kind": "bind_role", "role": "reflex", "model": "smollm2-135m"}
    events.emit("step_started", step=start)
    events.emit("step_done", step=start)
    events.emit("step_started", step=bind)
    events.emit("step_done", step=bind)
    events.emit("finished", state="succeeded", error=None)
    story = [line for line in lines(json_log) if line["logger"] == "stackd.switch"]
    assert [line["msg"] for line in story] == [
        "switch abc123 started: to 'embedded' from '(none)' (switch)",
        "switch abc123: start_process smollm2-135m (1.50 s)",
        "switch abc123: bind_role reflex -> smollm2-135m (0.90 s)",
        "switch abc123 succeeded in 3.40 s",
    ]
    assert all(line["switch_id"] == "abc123" for line in story)


async def test_a_failed_step_and_the_outcome_are_warnings_with_the_error(json_log: io.StringIO) -> None:
    clock = iter([0.0, 1.0, 3.0, 4.0]).__next__
    events = EventLog("f00", clock, "to 'x' from 'y' (switch)")
    step = {"kind": "start_container", "model": "vllm", "container": "c"}
    events.emit("step_started", step=step)
    events.emit("step_failed", step=step, error="no Docker")
    events.emit("finished", state="rolled_back", error="no Docker")
    story = [line for line in lines(json_log) if line["logger"] == "stackd.switch"][1:]
    assert [(line["level"], line["msg"]) for line in story] == [
        ("WARNING", "switch f00: start_container vllm (c) failed (2.00 s): no Docker"),
        ("WARNING", "switch f00 rolled_back in 4.00 s: no Docker"),
    ]


def test_json_lines_carry_no_ansi_and_no_color_message(json_log: io.StringIO) -> None:
    coloured = "\x1b[32mINFO\x1b[0m: Uvicorn running on \x1b[1mhttp://127.0.0.1:8001\x1b[0m"
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s", "http://127.0.0.1:8001", extra={"color_message": coloured}
    )
    logging.getLogger("uvicorn.error").info("\x1b[1mbold\x1b[0m text")
    raw = json_log.getvalue()
    assert "\x1b" not in raw and "\\u001b" not in raw and "color_message" not in raw, raw
    assert [line["msg"] for line in lines(json_log)] == [
        "Uvicorn running on http://127.0.0.1:8001",
        "bold text",
    ]
