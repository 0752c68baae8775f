"""``stackd switch`` piped: one line per step, when it ends, with its duration; the cloud members
left out for a missing key in one line naming the variables (the events are the daemon's shape,
``stackd/manager/events.py``)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress

from stackd.cli.switch_view import SwitchScreen, show_event, show_missing_keys

if TYPE_CHECKING:
    from stackd.cli.shapes import SwitchEvent


def events() -> list[SwitchEvent]:
    start: dict[str, object] = {"kind": "start_process", "model": "smollm2-135m"}
    found: list[SwitchEvent] = [
        {"type": "step_started", "step": start, "at": 100.0},
        {"type": "step_done", "step": start, "at": 102.5},
    ]
    for n, (model, var) in enumerate(
        [("claude", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY"), ("claude-2", "ANTHROPIC_API_KEY")]
    ):
        probe: dict[str, object] = {"kind": "probe_remote", "model": model}
        error = f"remote model {model!r} has no API key: set {var}"
        found += [
            {"type": "step_started", "step": probe, "at": 103.0 + n},
            {"type": "degraded", "model": model, "error": error, "at": 103.1 + n},
            {"type": "step_done", "step": probe, "at": 103.2 + n},
        ]
    return [*found, {"type": "finished", "state": "succeeded", "error": None, "at": 110.0}]


def piped_output() -> list[str]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with Progress(console=console, transient=True) as progress:
        screen = SwitchScreen(console, progress)
        for event in events():
            show_event(event, screen)
    show_missing_keys(screen)
    return [line for line in buffer.getvalue().splitlines() if line.strip()]


def test_piped_a_step_is_one_line_with_its_duration_and_never_a_running_line() -> None:
    lines = piped_output()
    assert not any("…" in line for line in lines), lines
    started = [line for line in lines if "smollm2-135m" in line]
    assert len(started) == 1 and started[0].lstrip().startswith("✓") and "(2.5 s)" in started[0], lines


def test_missing_keys_are_one_line_naming_each_variable_once() -> None:
    lines = piped_output()
    keyed = [line for line in lines if "API_KEY" in line or "API key" in line]
    assert keyed == [
        "  ! no API key, cloud members left out: ANTHROPIC_API_KEY (claude, claude-2), GEMINI_API_KEY (gemini)"
    ]
    assert lines[-2] == "succeeded " and len(lines) == 3, lines
