"""Live view of a switch: one line per step, a progress bar per Ollama layer being pulled.

On a terminal the running step is a live line (a spinner) that resolves in place into its
outcome; piped, each step prints once, when it ends, with its duration. Members that are
degraded because their API key is missing are said once, in one line naming the variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from stackd.api import answers
from stackd.cli.client import DaemonClient
from stackd.cli.render import step_text

if TYPE_CHECKING:
    from stackd.cli.shapes import SwitchEvent, SwitchState

MISSING_KEY = re.compile(r"has no API key: set (\w+)")


@dataclass
class SwitchScreen:
    """What the view keeps while it follows one switch."""

    console: Console
    progress: Progress
    bars: dict[str, TaskID] = field(default_factory=dict)
    running: dict[int, TaskID] = field(default_factory=dict)  # seq of step_started -> its live line
    started_at: dict[str, float] = field(default_factory=dict)  # step text -> when it started
    degraded: set[str] = field(default_factory=set)
    missing_keys: dict[str, list[str]] = field(default_factory=dict)  # variable -> members


def follow_switch(client: DaemonClient, started: SwitchState, console: Console | None) -> SwitchState:
    """Stream the switch's events until it ends; return its final state from the daemon."""
    switch_id = started["switch_id"]
    if console:
        console.print(f"switch [bold]{switch_id}[/] → {started.get('stack')}")
    with Progress(
        SpinnerColumn(finished_text=" "),
        TextColumn("{task.description}"),
        BarColumn(bar_width=None),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console or Console(quiet=True),
        transient=True,  # the live lines go; what each resolved into was printed above them
    ) as progress:
        screen = SwitchScreen(progress.console, progress)
        for event in client.stream_events(f"/model-stacks/switch/{switch_id}/events"):
            if console:
                show_event(event, screen)
    if console:
        show_missing_keys(screen)
    switch: SwitchState = client.get(f"/model-stacks/switch/{switch_id}", answers.SwitchAnswer)
    return switch


def show_event(event: SwitchEvent, screen: SwitchScreen) -> None:
    kind = event.get("type")
    step = event.get("step")
    console, progress = screen.console, screen.progress
    if kind == "pull_progress":
        total, done = event.get("total"), event.get("completed")
        if not total:  # "pulling manifest", "verifying sha256 digest" …: the step lines say enough
            return
        key = f"{event.get('tag')} {(event.get('digest') or '')[:19]}"
        if key not in screen.bars:
            screen.bars[key] = progress.add_task(f"pull {key[:40]}", total=total)
        progress.update(screen.bars[key], completed=done or 0, total=total)
    elif kind == "step_started" and step:
        text = step_text(step)
        screen.started_at[text] = float(event.get("at") or 0.0)
        if console.is_terminal:  # piped, the step is printed once, when it ends
            screen.running[hash(text)] = progress.add_task(escape(text), total=None)
    elif kind in ("step_done", "step_failed") and step:
        text = step_text(step)
        _resolve(screen, text)
        took = _took(screen, text, event)
        model = step.get("model")
        if kind == "step_failed":
            console.print(f"  [red]✗[/] {escape(text)}{took}: {escape(str(event.get('error', '')))}")
        elif _keyless(screen, model):
            pass  # said once, with the others, at the end
        elif model in screen.degraded and step.get("kind") == "probe_remote":
            console.print(f"  [yellow]![/] {escape(text)}{took} (degraded, the switch goes on)")
        else:
            console.print(f"  [green]✓[/] {escape(text)}{took}")
    elif kind == "undo_step" and step:
        console.print(f"  [yellow]↶[/] undo {escape(step_text(step))}")
    elif kind == "draining":
        note = " (gave up waiting)" if event.get("timed_out") else ""
        console.print(f"  … waited for {event.get('in_flight')} request(s) on {event.get('model')}{note}")
    elif kind == "degraded":
        model, error = str(event.get("model")), str(event.get("error", ""))
        screen.degraded.add(model)
        missing = MISSING_KEY.search(error)
        if missing:
            screen.missing_keys.setdefault(missing.group(1), []).append(model)
        else:
            console.print(f"  [yellow]degraded[/]: {model}: {escape(error)}")
    elif kind == "finished":
        state = event.get("state", "")
        colour = "green" if state == "succeeded" else "red"
        console.print(f"[{colour}]{state}[/] {escape(event.get('error') or '')}")
        if event.get("note"):
            console.print(f"  [yellow]{escape(str(event['note']))}[/]")


def show_missing_keys(screen: SwitchScreen) -> None:
    """One line for every member left out for a missing API key, naming the variables."""
    if screen.missing_keys:
        said = ", ".join(
            f"{var} ({', '.join(models)})" for var, models in sorted(screen.missing_keys.items())
        )
        screen.console.print(f"  [yellow]![/] no API key, cloud members left out: {said}")


def _keyless(screen: SwitchScreen, model: object) -> bool:
    return any(model in models for models in screen.missing_keys.values())


def _resolve(screen: SwitchScreen, text: str) -> None:
    task = screen.running.pop(hash(text), None)
    if task is not None:
        screen.progress.remove_task(task)


def _took(screen: SwitchScreen, text: str, event: SwitchEvent) -> str:
    began = screen.started_at.pop(text, None)
    at = event.get("at")
    if began is None or not isinstance(at, int | float) or not began:
        return ""
    return f" [dim]({max(0.0, at - began):.1f} s)[/]"
