"""Live view of a switch: steps as they run, a progress bar per Ollama layer being pulled."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from stackd.api import answers
from stackd.cli.client import DaemonClient
from stackd.cli.render import step_text


def follow_switch(client: DaemonClient, started: dict[str, Any], console: Console | None) -> dict[str, Any]:
    """Stream the switch's events until it ends; return its final state from the daemon."""
    switch_id = started["switch_id"]
    if console:
        console.print(f"switch [bold]{switch_id}[/] → {started.get('stack')}")
    bars: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console or Console(quiet=True),
        transient=False,
    ) as progress:
        degraded: set[str] = set()
        for event in client.stream_events(f"/model-stacks/switch/{switch_id}/events"):
            if console:
                _show(event, console, progress, bars, degraded)
    switch: dict[str, Any] = client.get(f"/model-stacks/switch/{switch_id}", answers.SwitchAnswer)
    return switch


def _show(
    event: dict[str, Any],
    console: Console,
    progress: Progress,
    bars: dict[str, TaskID],
    degraded: set[str] | None = None,
) -> None:
    kind = event.get("type")
    step = event.get("step")
    degraded = degraded if degraded is not None else set()
    if kind == "pull_progress":
        total, done = event.get("total"), event.get("completed")
        if not total:  # "pulling manifest", "verifying sha256 digest" …: the step lines say enough
            return
        key = f"{event.get('tag')} {(event.get('digest') or '')[:19]}"
        if key not in bars:
            bars[key] = progress.add_task(f"pull {key[:40]}", total=total)
        progress.update(bars[key], completed=done or 0, total=total)
    elif kind == "step_started" and step:
        console.print(f"  … {step_text(step)}")
    elif (
        kind == "step_done" and step and step.get("model") in degraded and step.get("kind") == "probe_remote"
    ):
        console.print(f"  [yellow]![/] {step_text(step)} (degraded, the switch goes on)")
    elif kind == "step_done" and step:
        console.print(f"  [green]✓[/] {step_text(step)}")
    elif kind == "step_failed" and step:
        console.print(f"  [red]✗[/] {step_text(step)}: {event.get('error', '')}")
    elif kind == "undo_step" and step:
        console.print(f"  [yellow]↶[/] undo {step_text(step)}")
    elif kind == "draining":
        note = " (gave up waiting)" if event.get("timed_out") else ""
        console.print(f"  … waiting for {event.get('in_flight')} request(s) on {event.get('model')}{note}")
    elif kind == "degraded":
        degraded.add(str(event.get("model")))
        console.print(f"  [yellow]degraded[/]: {event.get('model')}: {event.get('error', '')}")
    elif kind == "finished":
        state = event.get("state", "")
        colour = "green" if state == "succeeded" else "red"
        console.print(f"[{colour}]{state}[/] {event.get('error') or ''}")
        if event.get("note"):
            console.print(f"  [yellow]{event['note']}[/]")
