"""What ``stackd slices show`` and the slice part of ``stackd usage`` print (rich renderables)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from stackd.cli.usage_shapes import SlicesAnswer, SliceTally, UsageAnswer


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def tallies_table(tallies: dict[str, SliceTally]) -> Table:
    table = Table(
        "slice", "tried", "accepted 1st", "served", "promoted", "retried", "budget falls",
        "mean ms", "tokens", "$/1K", "regret",
        title="per slice since start",
    )  # fmt: skip
    for name, t in tallies.items():
        regret = f"{t['regrets']}/{t['regret_replays']}" if t["regret_replays"] else "-"
        table.add_row(
            name,
            str(t["tried"]),
            _pct(t["acceptance"]),
            str(t["served"]),
            str(t["promotions"]),
            str(t["retries"]),
            str(t["budget_falls"]),
            f"{t['latency']['mean_ms']:.0f}",
            str(t["prompt_tokens"] + t["completion_tokens"]),
            f"{t['cost_per_1k_tokens_usd']:.4f}",
            regret,
        )
    return table


def slices_renderable(data: SlicesAnswer) -> Group:
    controls = data.get("controls", {})
    switch = "ON" if controls.get("kill_switch") else "off"
    why = f" ({controls['kill_switch_reason']})" if controls.get("kill_switch_reason") else ""
    items: list[RenderableType] = [Text(f"kill switch: {switch}{why}")]
    for name, preset in data.get("presets", {}).items():
        items.append(Text(f"{name}: policy {preset['policy_version']}, slices {' < '.join(preset['order'])}"))
    for name, budget in controls.get("budgets", {}).items():
        items.append(
            Text(
                f"budget {name}: {budget['tokens_today']}/{budget['tokens_per_day'] or '-'} tokens today, "
                f"{budget['calls_last_minute']}/{budget['requests_per_minute'] or '-'} calls this minute"
            )
        )
    if data.get("slices"):
        items.append(tallies_table(data["slices"]))
    return Group(*items)


def usage_slices(data: UsageAnswer) -> Group:
    """The audit log's totals per slice (every routed answer since the state dir was made)."""
    served = data.get("slices", {}).get("served", [])
    tallies = data.get("slices", {}).get("since_start", {})
    if not served:
        return Group(tallies_table(tallies)) if tallies else Group()
    table = Table(
        "preset",
        "slice",
        "served",
        "validated",
        "promoted to it",
        "tokens",
        "mean ms",
        title="routed answers",
    )
    for row in served:
        table.add_row(
            row["preset"],
            row["slice"],
            str(row["served"]),
            str(row["validated"]),
            str(row["promoted_here"]),
            str(row["prompt_tokens"] + row["completion_tokens"]),
            f"{row['mean_latency_ms']:.0f}",
        )
    return Group(table, tallies_table(tallies)) if tallies else Group(table)
