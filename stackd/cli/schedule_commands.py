"""``stackd schedule``: the day policy as the daemon sees it (GET /schedule), and the lines
``stackd status`` and ``stackd usage`` add for it (the schedule, power, energy per stack)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.text import Text

from stackd.cli.options import JsonOpt, StateDirOpt, TokenOpt, UrlOpt, client, emit

if TYPE_CHECKING:
    from stackd.cli.shapes import Schedule, Status
    from stackd.cli.usage_shapes import UsageAnswer


def schedule_renderable(data: Schedule) -> Group:
    if not data.get("configured", True):
        return Group(Text("no day policy (the daemon runs without it)"))
    lines = [
        Text.from_markup(
            f"[bold]active:[/] {data.get('active') or '-'}   [bold]meant to run:[/] {data.get('intended') or '-'}"
        )
    ]
    window = data.get("window")
    if window:
        lines.append(
            Text(
                f"window: #{window['index']} '{window['stack']}' since {window['began']} ({data.get('timezone')})"
            )
        )
    else:
        lines.append(Text("window: none (no schedules: in the config)"))
    nxt = data.get("next_change")
    lines.append(Text(f"next change: '{nxt['stack']}' at {nxt['when']}" if nxt else "next change: none"))
    hold = data.get("hold")
    if hold:
        until = hold.get("until_local") or ("for good" if hold.get("until") is None else hold["until"])
        lines.append(Text(f"hold: '{hold['stack']}' until {until} ({hold['source']})"))
    else:
        lines.append(Text("hold: none"))
    idle = data.get("idle")
    if idle:
        lines.append(Text(f"idle: '{idle['upper']}' went idle; '{idle['lower']}' runs until a call wakes it"))
    lines.append(Text(f"{data.get('action')}: {data.get('why')}", style="dim"))
    return Group(*lines)


def status_lines(status: Status) -> list[Text]:
    """Power of each GPU and the schedule in one line each, for ``stackd status``."""
    lines = []
    for dev in (status.get("gpu") or {}).get("devices") or []:
        if dev.get("power_w") is not None:
            limit = f" of {dev['power_limit_w']:.0f} W" if dev.get("power_limit_w") is not None else ""
            util = f", {dev['util_pct']:.0f}% busy" if dev.get("util_pct") is not None else ""
            lines.append(Text(f"GPU {dev['index']} power: {dev['power_w']:.0f} W{limit}{util}"))
    schedule = status.get("schedule")
    if schedule and (schedule.get("window") or schedule.get("hold") or schedule.get("idle")):
        nxt = schedule.get("next_change")
        after = f"; next: '{nxt['stack']}' at {nxt['when']}" if nxt else ""
        lines.append(Text(f"schedule: {schedule.get('action')}: {schedule.get('why')}{after}"))
    return lines


def energy_renderable(data: UsageAnswer) -> Group:
    rows = data.get("energy") or []
    if not rows:
        return Group()
    from rich.table import Table

    table = Table("stack", "GPU energy (Wh)", title="GPU energy per stack (integrated from power samples)")
    for row in rows:
        table.add_row(str(row["stack"]), f"{row['wh']:.1f}")
    return Group(table)


def schedule(
    url: UrlOpt = None, token: TokenOpt = None, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """The day policy: the window current now, the next change, any hold or idle downshift, and why."""
    with client(url, token, state_dir) as c:
        data = c.get("/schedule")
    emit(data, as_json, schedule_renderable(data))
