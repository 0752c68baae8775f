"""The plan's KV-cache table, as ``stackd plan`` and ``stackd status`` print it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from stackd.cli.shapes import KvRow


def kv_table(rows: list[KvRow]) -> Table | None:
    """One line per member with an architecture, and in the caption the engine rule that sized
    each one's cache; None when no member has one."""
    if not rows:
        return None
    from stackd.planner.kv import SESSION_CONTEXTS  # the config models: only when there are rows

    table = Table(title="KV cache (docs/kv-planner.md)")
    for column in ("model", "KV/token", "context", "util", "KV room", "tokens"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for ctx in SESSION_CONTEXTS:
        table.add_column(f"@{ctx // 1024}K", justify="right", no_wrap=True)
    rules = [f"{row['model']}: {row['kv_rule']}" for row in rows if row.get("kv_rule")]
    if rules:  # a line under the table: a column of them would squeeze the numbers at 100 columns
        table.caption = escape("engine rule: " + "; ".join(rules))
    for row in rows:
        sessions = dict((int(ctx), n) for ctx, n in row.get("sessions") or [])
        util = row.get("gpu_memory_utilization")
        name = row["model"] + (" [red](refused)[/]" if row.get("refused") else "")
        table.add_row(
            name,
            _kib(row["kv_bytes_per_token"])
            + (f" +{_mib(row['mamba_state_bytes'])}/seq" if row["mamba_state_bytes"] else ""),
            _count(row.get("context_tokens")),
            f"{util:.2f}" if util is not None else "-",
            f"{kv_mib / 1024:.2f} GiB" if (kv_mib := row.get("kv_mib")) is not None else "-",
            _count(row.get("kv_tokens")),
            *(f"{sessions[ctx]:g}" if ctx in sessions else "-" for ctx in SESSION_CONTEXTS),
        )
    return table


def _kib(n: int) -> str:
    return f"{n / 1024:g} KiB"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"
