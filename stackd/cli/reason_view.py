"""``stackd reason``: print the answer, then the attempts table (also when every strategy failed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console

from stackd.cli.client import DaemonClient, DaemonError
from stackd.cli.render import attempts_table

if TYPE_CHECKING:
    from stackd.cli.usage_shapes import ReasonAnswer, ReasonUsage


@dataclass(frozen=True)
class ReasonOptions:
    effort: int = 5
    stream: bool = False
    max_tokens: int | None = None
    timeout_s: float | None = None


def run_reason(
    client: DaemonClient, console: Console, problem: str, options: ReasonOptions, as_json: bool
) -> None:
    body: dict[str, object] = {"problem": problem, "effort": options.effort}
    if options.max_tokens is not None:
        body["max_tokens"] = options.max_tokens
    if options.timeout_s is not None:
        body["timeout_s"] = options.timeout_s
    stream = options.stream
    try:
        final: ReasonAnswer = (
            _stream(client, console, body, as_json) if stream else client.post("/tools/reason", body)
        )
    except DaemonError as exc:
        answer = exc.detail.get("body")
        attempts = answer.get("attempts") if isinstance(answer, dict) else None
        if attempts and not as_json:
            console.print(attempts_table(attempts))
        raise
    if as_json:
        console.print_json(data=final)
        return
    if not stream:
        console.print(final.get("answer", ""), markup=False, highlight=False)
    if "error" in final:
        console.print(f"[red]{final['error'].get('message')}[/]")
    attempts = final.get("attempts") or (final.get("error") or {}).get("attempts") or []
    console.print(attempts_table(attempts))
    if final.get("backend"):
        usage = final.get("usage") or {}
        console.print(
            f"answered by {final['backend']} ({final.get('model')}) via {final.get('strategy')}; "
            f"tokens {token_figures(usage)}"
        )


def token_figures(usage: ReasonUsage) -> str:
    """``12 in / 5 out``; ``?`` for a count nobody could make, ``~`` before stackd's estimates."""
    mark = "~" if usage.get("estimated") else ""

    def shown(value: int | None) -> str:
        return "?" if value is None else f"{mark}{value}"

    return f"{shown(usage.get('prompt_tokens'))} in / {shown(usage.get('completion_tokens'))} out"


def _stream(client: DaemonClient, console: Console, body: dict[str, object], as_json: bool) -> ReasonAnswer:
    final: ReasonAnswer = {}
    event: ReasonAnswer
    for event in client.stream_events_post("/tools/reason", {**body, "stream": True}):
        if "delta" in event:
            if not as_json:
                console.print(event["delta"], end="", soft_wrap=True, highlight=False, markup=False)
        else:
            final = event
    if not as_json:
        console.print()
    return final
