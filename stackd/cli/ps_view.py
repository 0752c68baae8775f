"""``stackd ps``: the active stack's members as processes, like ``ollama ps`` — one line each with
its PID, port, uptime, restarts, memory measured against its budget, and state.

Read from ``GET /status`` (its members, and ``process`` for an engine stackd runs); a member
that is not an engine of stackd's (a cloud model, an Ollama tag) has ``-`` where it has no PID.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.table import Table

from stackd.planner.units import gib

if TYPE_CHECKING:
    from stackd.cli.shapes import Member, PsRow, Status


def uptime(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def memory(member: Member | PsRow) -> str:
    """Measured / budget (``-`` measured: nothing to measure or not measured yet)."""
    budget, measured = member.get("memory_mib") or 0, member.get("measured_mib")
    where = {"gpu": "VRAM", "cpu": "RAM"}.get(str(member.get("placement")), "")
    if not budget and measured is None:
        return "-"
    used = "-" if measured is None else gib(measured, places=1).removesuffix(" GiB")
    return f"{used} / {gib(budget, places=1)} {where}".rstrip()


def ps_rows(status: Status, now: float) -> list[PsRow]:
    """The members of the active stack, and any other that runs an engine (an on-demand or a
    leftover one): the rows ``ps_table`` prints and ``stackd ps --json`` returns."""
    rows: list[PsRow] = []
    for member in status.get("members", []):
        process = member.get("process") or {}
        if not member.get("in_stack") and not process.get("pid"):
            continue
        ready_at = process.get("ready_at")
        up = ready_at if member.get("state") == "running" and isinstance(ready_at, int | float) else None
        rows.append(
            {
                "name": member["name"],
                "runtime": member.get("runtime"),
                "state": member.get("state"),
                "pid": process.get("pid"),
                "port": process.get("port"),
                "uptime_s": None if up is None else round(now - up),
                "restarts": process.get("restarts"),
                "memory_mib": member.get("memory_mib"),
                "measured_mib": member.get("measured_mib"),
                "placement": member.get("placement"),
            }
        )
    return rows


def ps_table(rows: list[PsRow], stack: str | None) -> Table:
    table = Table(title=f"stack {stack or '(none active)'}", box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("name", "pid", "port", "uptime", "restarts", "memory (used / budget)", "state"):
        table.add_column(column, justify="right" if column in ("pid", "port", "restarts") else "left")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["pid"] or "-"),
            str(row["port"] or "-"),
            uptime(row["uptime_s"]),
            "-" if row["restarts"] is None else str(row["restarts"]),
            memory(row),
            str(row["state"]),
        )
    return table
