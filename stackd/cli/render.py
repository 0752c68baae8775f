"""Rich renderings of the daemon's JSON answers. Each takes the JSON shape the API returns,
so the offline ``stackd plan`` and the daemon-backed commands print the same tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def gib(mib: int | float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.1f} GiB"


def step_text(step: dict[str, Any]) -> str:
    kind = step["kind"]
    target = step.get("container") or step.get("tag") or step.get("model") or ""
    if kind in ("bind_role", "unbind_role"):
        return f"{kind.replace('_', ' ')} {step['role']}" + (
            f" -> {step['model']}" if step.get("model") else ""
        )
    return f"{kind.replace('_', ' ')} {step.get('model', '')}" + (
        f" ({target})" if target != step.get("model") else ""
    )


def vram_bar(vram: dict[str, Any], width: int = 40) -> Text:
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


def plan_renderable(plan: dict[str, Any]) -> Group:
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
    items: list[Any] = [Text.from_markup(title), steps]
    vram = plan.get("vram")
    if vram:
        ledger = Table(
            title=f"VRAM ledger — GPU {vram['device']} {vram['gpu_name']}"
            + (" (simulated)" if vram.get("simulated") else "")
        )
        ledger.add_column("item")
        ledger.add_column("kind")
        ledger.add_column("VRAM", justify="right")
        for item in vram.get("items", []):
            ledger.add_row(item["model"], item["kind"], gib(item["mib"]))
        ledger.add_section()
        ledger.add_row("total", "", gib(vram["total_mib"]))
        ledger.add_row("reserve", "", gib(vram["reserve_mib"]))
        ledger.add_row("always-on", "", gib(vram["always_on_mib"]))
        ledger.add_row(
            f"on-demand swap ({vram.get('largest_swap_group') or '-'})", "", gib(vram["swap_budget_mib"])
        )
        ledger.add_row("[bold]headroom[/]", "", f"[bold]{gib(vram['headroom_mib'])}[/]")
        items += [ledger, vram_bar(vram)]
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


def stacks_table(data: dict[str, Any]) -> Table:
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


def status_renderable(status: dict[str, Any]) -> Group:
    items: list[Any] = [Text.from_markup(f"[bold]active stack:[/] {status.get('active_stack') or '-'}")]
    gpu = status.get("gpu") or {}
    if gpu.get("vram"):
        items.append(vram_bar(gpu["vram"]))
    else:
        for dev in gpu.get("devices") or []:
            items.append(
                Text(
                    f"GPU {dev['index']} {dev['name']}: {gib(dev['used_mib'])} used of "
                    f"{gib(dev['total_mib'])}" + (" (simulated)" if gpu.get("simulated") else "")
                )
            )
        if not gpu.get("devices"):
            items.append(Text(f"GPU: {gpu.get('state') or 'none'}"))
    if not status.get("active_stack"):
        items.append(
            Text("no stack is active: run 'stackd switch NAME' (see 'stackd stacks')", style="yellow")
        )
    members = Table(title="members")
    for col in ("model", "runtime", "placement", "memory", "state", "detail"):
        members.add_column(col)
    for m in status.get("members", []):
        members.add_row(
            m["name"],
            m.get("runtime", ""),
            m.get("placement", ""),
            gib(m.get("memory_mib")),
            m.get("state", ""),
            m.get("detail") or "",
        )
    roles = Table(title="roles")
    roles.add_column("role")
    roles.add_column("model")
    for role, model in sorted((status.get("roles") or {}).items()):
        roles.add_row(role, model)
    items += [members, roles]
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


def print_json(console: Console, data: Any) -> None:
    console.print_json(data=data)


def roles_table(data: dict[str, Any]) -> Table:
    table = Table(title=f"roles — stack {data.get('stack') or '-'} (version {data.get('version', 0)})")
    for col in ("role", "model", "endpoint", "health"):
        table.add_column(col)
    for row in data.get("roles", []):
        table.add_row(row["role"], row["model"], row.get("endpoint") or "-", row.get("health_url") or "-")
    return table


def attempts_table(attempts: list[dict[str, Any]]) -> Table:
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


def usage_table(data: dict[str, Any]) -> Table:
    table = Table(title="usage per strategy and backend")
    for col in (
        "strategy",
        "backend",
        "requests",
        "answered",
        "failures",
        "first token ms",
        "total ms",
        "tokens in/out",
        "cost USD",
    ):
        table.add_column(col, justify="left" if col in ("strategy", "backend", "failures") else "right")
    for row in data.get("rows", []):
        failures = ", ".join(f"{kind} {n}" for kind, n in (row.get("failures") or {}).items()) or "-"
        table.add_row(
            row["strategy"],
            row["backend"] or "-",
            str(row["requests"]),
            str(row["answered"]),
            failures,
            _ms(row.get("mean_first_token_ms")),
            _ms(row.get("mean_total_ms")),
            f"{row.get('prompt_tokens', 0)}/{row.get('completion_tokens', 0)}",
            f"{row.get('cost_usd', 0):.4f}",
        )
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
