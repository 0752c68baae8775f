"""Rich renderings of the daemon's JSON answers. Each takes the JSON shape the API returns,
so the offline ``stackd plan`` and the daemon-backed commands print the same tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from stackd.cli.cluster_view import cluster_ledger_table, cluster_status_table
from stackd.cli.kv_view import kv_table
from stackd.cli.schedule_commands import status_lines
from stackd.planner.plan import describe_step
from stackd.planner.units import gib as planner_gib

if TYPE_CHECKING:
    from stackd.cli.shapes import (
        Health,
        LedgerItem,
        Member,
        PlanShape,
        Probe,
        RolesAnswer,
        StacksList,
        Status,
        VramLedger,
    )
    from stackd.cli.usage_shapes import Attempt


def gib(mib: int | float | None) -> str:
    """The CLI's tables keep one decimal place (``13.0 GiB``) so that columns align; None is ``-``."""
    return "-" if mib is None else planner_gib(mib, places=1)


def step_text(step: Mapping[str, object]) -> str:
    return describe_step(step, spaced=True)


def vram_bar(vram: VramLedger, width: int = 40) -> Text:
    """A bar of the card: reserve | always-on | swap budget | free."""
    total = max(vram["total_mib"], 1)
    parts = [
        (vram["reserve_mib"], "grey50", "reserve"),
        (vram["always_on_mib"], "cyan", "always-on"),
        (vram["swap_budget_mib"], "magenta", "on-demand"),
    ]
    bar = Text()
    used_cells = 0
    for mib, style, _ in parts:
        cells = round(width * mib / total)
        cells = min(cells, width - used_cells)
        bar.append("█" * cells, style=style)
        used_cells += cells
    free = max(width - used_cells, 0)
    bar.append("░" * free, style="green" if vram["headroom_mib"] >= 0 else "red")
    bar.append(f"  {gib(total - max(vram['headroom_mib'], 0))} / {gib(total)}")
    return bar


def plan_renderable(plan: PlanShape) -> Group:
    title = f"plan: {plan['stack']} — " + (
        "[green]feasible[/]" if plan["feasible"] else "[red]NOT feasible[/]"
    )
    steps = Table(title="steps", show_header=True, header_style="bold")
    steps.add_column("#", justify="right")
    steps.add_column("step")
    for i, step in enumerate(plan["steps"], 1):
        steps.add_row(str(i), step_text(step))
    if not plan["steps"]:
        steps.add_row("", "nothing to do: the stack is already running as planned")
    items: list[RenderableType] = [Text.from_markup(title), steps]
    vram = plan.get("vram")
    if vram:
        ledger = Table(
            title=f"VRAM ledger — GPU {vram['device']} {vram['gpu_name']}"
            + (" (simulated)" if vram.get("simulated") else "")
        )
        ledger.add_column("item")
        ledger.add_column("kind")
        ledger.add_column("VRAM", justify="right")
        ledger.add_column("measured", justify="right")
        for item in vram.get("items", []):
            ledger.add_row(item["model"], item["kind"], gib(item["mib"]), _measured_text(item))
        ledger.add_section()
        ledger.add_row("total", "", gib(vram["total_mib"]), "")
        ledger.add_row("reserve", "", gib(vram["reserve_mib"]), "")
        ledger.add_row("always-on", "", gib(vram["always_on_mib"]), "")
        ledger.add_row(
            f"on-demand swap ({vram.get('largest_swap_group') or '-'})", "", gib(vram["swap_budget_mib"])
        )
        ledger.add_row("[bold]headroom[/]", "", f"[bold]{gib(vram['headroom_mib'])}[/]")
        items += [ledger, vram_bar(vram)]
    if kv := kv_table(plan.get("kv") or []):
        items.append(kv)
    if nodes := cluster_ledger_table(plan.get("cluster")):
        items.append(nodes)
    ram = plan.get("ram")
    if ram:
        items.append(
            Text(
                f"RAM: always-on {gib(ram['always_on_mib'])} + largest on-demand {gib(ram['on_demand_max_mib'])}"
                f" of {gib(ram['available_mib'])} available ({gib(ram['total_mib'])} total); "
                f"headroom {gib(ram['headroom_mib'])}"
            )
        )
    for refusal in plan.get("refusals", []):
        items.append(Text(f"refused ({refusal['code']}): {refusal['message']}", style="red"))
    return Group(*items)


def stacks_table(data: StacksList) -> Table:
    table = Table(title="model stacks")
    table.add_column("")
    table.add_column("stack", style="bold")
    table.add_column("members")
    table.add_column("description")
    for stack in data["stacks"]:
        mark = "●" if stack["active"] else (" " if not stack.get("default") else "○")
        table.add_row(mark, stack["name"], ", ".join(stack["members"]), stack.get("description", ""))
    table.caption = (
        f"active: {data.get('active') or '-'}   default: {data.get('default')}   (● active, ○ default)"
    )
    return table


def daemon_header(daemon: Health) -> Text:
    """Which daemon answered: its URL, PID and version, then its config file and state dir."""
    text = Text()
    text.append("daemon ", style="bold")
    text.append(str(daemon.get("url") or "-"))
    if daemon.get("pid"):
        text.append(f"  pid {daemon['pid']}")
    if daemon.get("version"):
        text.append(f"  stackd {daemon['version']}")
    if daemon.get("config") or daemon.get("state_dir"):
        text.append("\nconfig ", style="bold")
        text.append(str(daemon.get("config") or "-"))
        text.append("\nstate dir ", style="bold")
        text.append(str(daemon.get("state_dir") or "-"))
    return text


def daemon_line(daemon: Health) -> Text:
    """The daemon on one line (it wraps on a narrow terminal), for commands that change it."""
    parts = [f"daemon {daemon.get('url') or '-'}"]
    parts += [
        f"{label} {value}"
        for value, label in ((daemon.get("config"), "config"), (daemon.get("state_dir"), "state dir"))
        if value
    ]
    return Text("  ".join(parts))


def status_renderable(status: Status, wide: bool = False) -> Group:
    """Fits 80 columns: the members table has no detail column; a member's detail is a note under
    it. ``wide`` puts the details and last probes in the table."""
    items: list[RenderableType] = [
        Text.from_markup(f"[bold]active stack:[/] {status.get('active_stack') or '-'}")
    ]
    gpu = status.get("gpu") or {}
    for dev in gpu.get("devices") or []:
        items.append(
            Text(
                f"GPU {dev['index']} {dev['name']}: {gib(dev['used_mib'])} used of "
                f"{gib(dev['total_mib'])}" + (" (simulated)" if gpu.get("simulated") else "")
            )
        )
    if not gpu.get("devices"):
        items.append(Text(f"GPU: {gpu.get('state') or 'none'}"))
    items += status_lines(status)  # power; the day policy's window, hold and why
    if vram := gpu.get("vram"):  # the plan's ledger of the card: what the active stack reserves
        items.append(vram_bar(vram))
    if kv := kv_table(gpu.get("kv") or []):
        items.append(kv)
    if nodes := cluster_status_table(status.get("cluster")):
        items.append(nodes)
    if not status.get("active_stack"):
        items.append(
            Text("no stack is active: run 'stackd switch NAME' (see 'stackd stacks')", style="yellow")
        )
    members = status.get("members", [])
    items.append(members_table(members, wide))
    if not wide:
        items += member_notes(members)
    roles = Table(title="roles")
    roles.add_column("role")
    roles.add_column("model")
    for role, model in sorted((status.get("roles") or {}).items()):
        roles.add_row(role, model)
    items.append(roles)
    leases = status.get("leases") or []
    if leases:
        table = Table(title="GPU leases")
        for col in ("lease", "model", "expires in"):
            table.add_column(col)
        for lease in leases:
            table.add_row(lease["id"], lease["model"], f"{lease.get('expires_in_s', 0):.0f} s")
        items.append(table)
    if status.get("recovery"):
        items.append(Panel(str(status["recovery"]), title="recovery at start"))
    return Group(*items)


STATE_STYLE = {
    "running": "green",
    "loaded": "green",
    "ready": "green",
    "pulled": "cyan",
    "stopped": "yellow",
    "unprobed": "yellow",
    "degraded": "red",
    "unhealthy": "red",
    "missing": "red",
    "unknown": "red",
}


def members_table(members: list[Member], wide: bool) -> Table:
    table = Table(title="members")
    for col in ("model", "runtime", "placement", "memory", "state"):
        # 80 columns hold these five unwrapped; --wide is for a wider terminal, where nothing wraps
        table.add_column(
            col, no_wrap=not wide, overflow="fold", justify="right" if col == "memory" else "left"
        )
    if wide:
        for col in ("lifecycle", "last probe", "detail"):
            table.add_column(col, overflow="fold")
    for m in members:
        state = m.get("state", "")
        row: list[RenderableType] = [
            m["name"] + ("" if m.get("in_stack", True) else " (extra)"),
            m.get("runtime", ""),
            m.get("placement", ""),
            _memory_text(m),
            Text(state, style=STATE_STYLE.get(state, "")),
        ]
        if wide:
            probe = m.get("last_probe")
            row += [m.get("lifecycle") or "", _probe_text(probe), m.get("detail") or ""]
        table.add_row(*row)
    return table


def _measured_text(item: LedgerItem) -> str:
    """A ledger line's measurement ('' when none); '!' past 10% over its declaration (budgeted so)."""
    measured = item.get("measured_mib")
    if measured is None:
        return ""
    declared = item.get("mib") or 0
    return f"{_beside(declared, measured)[1]}{' !' if measured > 1.1 * declared else ''}"


def _beside(configured: int | float | None, measured: int | float) -> tuple[str, str]:
    """Two sizes to be read side by side: in GiB, or in MiB where GiB's one decimal would show
    two different sizes as the same figure (614 MiB budgeted, 652 MiB measured: '0.6 (0.6)')."""
    if configured and gib(configured) == gib(measured) and round(configured) != round(measured):
        return f"{round(configured)} MiB", f"{round(measured)} MiB"
    return gib(configured or None), gib(measured)


def _memory_text(member: Member) -> str:
    """Configured size, and beside it what the running member was measured to hold; a member
    that outgrows its configuration by more than 10% is marked with '!'."""
    declared = member.get("memory_mib") or None  # 0: a remote, which takes none here
    measured = member.get("measured_mib")
    if measured is None:
        return gib(declared)
    configured, measured_text = _beside(declared, measured)
    over = measured > 1.1 * (declared or 0)
    return f"{configured} ({measured_text}{' !' if over else ''})"


def member_notes(members: list[Member]) -> list[Table]:
    """The details left out of the 80-column members table (why a member is not healthy), as a
    borderless two-column grid: a long detail wraps under itself, beside its member's name."""
    noted = [m for m in members if m.get("detail")]
    if not noted:
        return []
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for m in noted:
        grid.add_row(f"  {m['name']}:", m["detail"])
        for line in m.get("log_tail") or []:  # a dead engine's last words
            grid.add_row("", Text(line, style="dim"))
    return [grid]


def _probe_text(probe: Probe | None) -> str:
    if not probe:
        return "-"
    return "ok" if probe.get("ok") else f"failed: {probe.get('error') or '?'}"


def print_json(console: Console, data: object) -> None:
    console.print_json(data=data)


def roles_table(data: RolesAnswer) -> Table:
    table = Table(title=f"roles — stack {data.get('stack') or '-'} (version {data.get('version', 0)})")
    for col in ("role", "model", "endpoint", "health"):
        table.add_column(col, overflow="fold")  # a URL has no space to wrap at: fold it, never cut it
    for row in data.get("roles", []):
        table.add_row(row["role"], row["model"], row.get("endpoint") or "-", row.get("health_url") or "-")
    return table


def attempts_table(attempts: list[Attempt]) -> Table:
    table = Table(title="attempts")
    for col in ("strategy", "backend", "status", "reason", "ms"):
        table.add_column(col)
    style = {"answered": "green", "failed": "red", "skipped": "yellow"}
    for a in attempts:
        status = a.get("status", "")
        table.add_row(
            a.get("strategy", ""),
            a.get("backend") or "-",
            f"[{style.get(status, '')}]{status}[/]",
            a.get("reason") or "",
            f"{a.get('elapsed_ms', 0):.1f}",
        )
    return table
