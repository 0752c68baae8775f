"""``stackd reason``: print the answer, then the attempts table."""

from __future__ import annotations

import json

from rich.console import Console

from stackd.cli.client import DaemonClient
from stackd.cli.render import attempts_table


def run_reason(client: DaemonClient, console: Console, problem: str, effort: int, stream: bool,
               as_json: bool) -> None:
    body = {"problem": problem, "effort": effort}
    if not stream:
        data = client.post("/tools/reason", body)
        if as_json:
            console.print_json(data=data)
            return
        console.print(data.get("answer", ""))
        console.print(attempts_table(data.get("attempts", [])))
        return
    final: dict = {}
    for event in client.stream_events_post("/tools/reason", {**body, "stream": True}):
        if "delta" in event:
            console.print(event["delta"], end="", soft_wrap=True, highlight=False, markup=False)
        else:
            final = event
    console.print()
    if as_json:
        console.print(json.dumps(final))
    elif final.get("attempts"):
        console.print(attempts_table(final["attempts"]))
