"""``stackd usage`` as tables: per strategy and backend, at 80 columns (``--wide``: every figure).

The slices' and the energy's parts are ``stackd.cli.slices_view`` and ``stackd.cli.schedule_commands``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from stackd.cli.usage_shapes import UsageAnswer, UsageRow


def usage_renderable(data: UsageAnswer, wide: bool = False) -> Group:
    """The usage table and, under it, the failures by kind and the strategies that were only
    skipped (no request sent: no backend bound, circuit open …). ``wide`` puts both in the table."""
    rows = data.get("rows", [])
    sent = rows if wide else [r for r in rows if r.get("requests")]
    if not rows:
        return Group(Text("no usage recorded yet: 'stackd reason' or the gateway's /v1 routes add to it"))
    items: list[RenderableType] = [usage_table(sent, wide)]
    failed = [r for r in rows if r.get("failures")]
    if failed and not wide:  # why they failed, by kind, as the status notes say why a member is not up
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for r in failed:
            by_kind = ", ".join(f"{kind} {n}" for kind, n in r["failures"].items())
            grid.add_row(f"  {r['strategy']} {r['backend'] or '-'} failed:", by_kind)
        items.append(grid)
    only_skipped = [r for r in rows if not r.get("requests")]
    if only_skipped and not wide:
        listing = ", ".join(f"{skipped_name(r)} ({_skips(r.get('skipped', 0))})" for r in only_skipped)
        items.append(Text(f"skipped without a request: {listing}", style="yellow"))
    return Group(*items)


def _skips(n: int) -> str:
    return "skipped once" if n == 1 else f"skipped {n} times"


def skipped_name(row: UsageRow) -> str:
    """A strategy, and its backend when it had one ('-': none was bound)."""
    backend = row.get("backend")
    strategy: str = row["strategy"]
    return strategy + (f" {backend}" if backend not in (None, "-") else "")


def usage_table(rows: list[UsageRow], wide: bool = False) -> Table:
    """Fits 80 columns: strategy, backend, requests, failed (the rest were answered), mean
    seconds and cost, under a header rule. ``wide`` adds answers, skips, failures by kind, time
    to first token and tokens; on a narrow terminal its cells wrap, none is cut."""
    table = Table(title="usage per strategy and backend", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("strategy", overflow="fold")
    table.add_column("backend", overflow="fold")
    numbers = [*(["requests", "answered", "skipped", "failures"] if wide else ["calls", "failed"])]
    numbers += ["first token s", "mean s", "tokens in/out", "USD"] if wide else ["mean s", "tokens", "USD"]
    for col in numbers:
        table.add_column(
            col, justify="left" if col == "failures" else "right", no_wrap=not wide, overflow="fold"
        )
    for row in rows:
        failures = row.get("failures") or {}
        cells = [row["strategy"], row["backend"] or "-", str(row["requests"])]
        if wide:
            by_kind = ", ".join(f"{kind} {n}" for kind, n in failures.items()) or "-"
            cells += [str(row["answered"]), str(row.get("skipped", 0)), by_kind]
            cells.append(_seconds(row.get("mean_first_token_ms")))
        else:
            cells.append(str(sum(failures.values())))
        cells.append(_seconds(row.get("mean_total_ms")))
        cells.append(usage_tokens(row) if wide else usage_tokens(row, short=True))
        cost = row.get("cost_usd", 0)
        cells.append(f"{cost:.4f}" if wide or cost < 1 else f"{cost:.2f}")  # cents once it is dollars
        table.add_row(*cells)
    return table


def usage_tokens(row: UsageRow, short: bool = False) -> str:
    """``in/out``, then how many answers' figures were stackd's estimate (``~n``) or unknown
    (``?n``, left out of the sums). ``short``: counts as ``12.3M`` and no notes (80 columns)."""
    count = _count if short else str
    cell = f"{count(row.get('prompt_tokens', 0))}/{count(row.get('completion_tokens', 0))}"
    if short:
        return cell
    notes = [f"~{n}" for n in [row.get("tokens_estimated") or 0] if n]
    notes += [f"?{n}" for n in [row.get("tokens_unknown") or 0] if n]
    return f"{cell} ({' '.join(notes)})" if notes else cell


def _count(n: int) -> str:
    """A count as a person scans it: ``987``, ``45.6k``, ``12.3M``."""
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (10_000, "k")):
        if n >= size:
            return f"{n / (size if unit != 'k' else 1000):.1f}{unit}"
    return str(n)


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}"
