"""The status page's member cards, its RAM bar and the header's counts: pure, no I/O.

A card holds in one place what ``/status`` spreads over a member: its state and why, its last
probe (only where it says more than the state), the engine's PID, port, uptime and restarts, its
memory measured against its budget (RAM for a CPU member, VRAM for a GPU one), and its last log
lines without the health probe's requests (an engine logs every ``GET /v1/models`` stackd sends:
they are most of a quiet engine's log and say nothing).

The RAM bar, like the GPU bar (``page_view.gpu_bar``), has fixed segments in this order:

    measured   what stackd's resident CPU members hold now (their budget where not measured)
    declared   the rest of their budgets: declared in the config, not in use now
    foreign    what the rest of the machine holds (total - available - measured), in steps of 256 MiB
    free       the rest
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from stackd.drivers.probe_lines import without_probes

RAM_SEGMENTS: tuple[tuple[str, str], ...] = (
    ("measured", "stackd members (measured)"),
    ("declared", "declared, not in use"),
    ("foreign", "other processes"),
    ("free", "free"),
)
RESIDENT_STATES = frozenset({"running", "loaded", "unhealthy", "restarting"})
HEALTHY_STATES = frozenset({"running", "loaded", "ready"})
# States that are what an on-demand or cloud member is when nobody needs it: neither healthy nor degraded.
IDLE_STATES = frozenset({"stopped", "pulled", "unprobed"})
LOG_LINES = 4
RAM_STEP_MIB = 256
MISSING_KEY = re.compile(r"has no API key: set (\w+)")


class BarModel(TypedDict):
    """A model drawn in a memory bar: what its config declares, what was measured (None: not)."""

    name: str
    mib: int
    measured_mib: int | None


class ProbeHealth(TypedDict):
    ok: bool
    at: float | None
    error: str | None  # None when the card's state already says it


class MemberCard(TypedDict):
    """One member's card (the values are ``/status``'s member, reworded where the module says)."""

    name: str
    runtime: str | None
    placement: str | None
    lifecycle: str | None
    in_stack: bool | None
    state: str | None
    detail: str | None
    health: ProbeHealth | None
    memory_kind: str | None
    memory_mib: int | None
    measured_mib: int | None
    pid: int | None
    port: int | None
    ready_at: float | None
    restarts: int | None
    exits: object
    log_tail: list[str]
    actions: list[str]


class RamSegment(TypedDict):
    kind: str
    label: str
    mib: int
    models: list[BarModel]


class RamBar(TypedDict):
    total_mib: int
    headroom_mib: int | None
    segments: list[RamSegment]


def missing_key(detail: str | None) -> str | None:
    """The variable a remote member's 'no API key' detail names, else None."""
    found = MISSING_KEY.search(detail or "")
    return found.group(1) if found else None


def member_card(member: Mapping[str, Any], log_lines: Sequence[str]) -> MemberCard:
    """One member's card (see the module's docstring)."""
    state, detail = member.get("state"), member.get("detail")
    key = missing_key(detail)
    if key is not None:  # said once, short: the notices name every missing variable together
        state, detail = "no key", f"set {key}"
    probe = member.get("last_probe") or None
    health: ProbeHealth | None = None
    if probe:
        error = probe.get("error")
        health = {
            "ok": bool(probe.get("ok")),
            "at": probe.get("at"),
            "error": None if error == member.get("detail") else error,  # the state already says it
        }
    process = member.get("process") or {}
    ready_at = process.get("ready_at")
    placement = member.get("placement")
    return {
        "name": member["name"],
        "runtime": member.get("runtime"),
        "placement": placement,
        "lifecycle": member.get("lifecycle"),
        "in_stack": member.get("in_stack"),
        "state": state,
        "detail": detail,
        "health": health,
        "memory_kind": {"gpu": "VRAM", "cpu": "RAM"}.get(str(placement)),
        "memory_mib": member.get("memory_mib"),
        "measured_mib": member.get("measured_mib"),
        "pid": process.get("pid"),
        "port": process.get("port"),
        # the page counts the uptime from here (a snapshot that changed every second would be sent every second)
        "ready_at": ready_at if ready_at and member.get("state") == "running" else None,
        "restarts": process.get("restarts"),
        "exits": process.get("exits"),
        "log_tail": without_probes(log_lines or member.get("log_tail") or [], LOG_LINES),
        "actions": actions(member),
    }


def actions(member: Mapping[str, Any]) -> list[str]:
    """What the card offers (each behind the token): ``restart`` an engine of stackd's,
    ``stop`` an on-demand one that runs, ``log`` where stackd keeps the engine's log."""
    runtime, state = member.get("runtime"), member.get("state")
    out = []
    engine = runtime in ("process", "docker")
    if engine and member.get("in_stack") and (state != "stopped" or member.get("lifecycle") != "on_demand"):
        out.append("restart")
    if member.get("lifecycle") == "on_demand" and member.get("in_stack") and state in RESIDENT_STATES:
        out.append("stop")
    if engine:
        out.append("log")
    return out


def counts(cards: Sequence[Mapping[str, object]]) -> dict[str, int]:
    """The header's counts over the active stack's members: healthy, degraded (any other trouble),
    without a key (remote members whose API key variable is unset) and idle (on demand, stopped)."""
    shown = [c for c in cards if c.get("in_stack")]
    healthy = sum(1 for c in shown if c.get("state") in HEALTHY_STATES)
    idle = sum(1 for c in shown if c.get("state") in IDLE_STATES)
    no_key = sum(1 for c in shown if c.get("state") == "no key")
    return {
        "members": len(shown),
        "healthy": healthy,
        "idle": idle,
        "no_key": no_key,
        "degraded": len(shown) - healthy - idle - no_key,
    }


def ram_bar(ram: Mapping[str, Any] | None, members: Sequence[Mapping[str, object]]) -> RamBar | None:
    """The RAM ledger as the bar's segments (see the module's docstring); None without one."""
    if not ram or not ram.get("total_mib"):
        return None
    resident = {m["name"] for m in members if m.get("state") in RESIDENT_STATES}
    rows: list[BarModel] = [
        {"name": i["model"], "mib": int(i["mib"]), "measured_mib": i.get("measured_mib")}
        for i in ram.get("items", ())
        if i["model"] in resident
    ]
    measured = sum(int(r["measured_mib"] if r["measured_mib"] is not None else r["mib"]) for r in rows)
    declared = sum(max(r["mib"] - int(r["measured_mib"] or r["mib"]), 0) for r in rows)
    total, available = int(ram["total_mib"]), int(ram.get("available_mib") or 0)
    # The rest of the machine moves by some MiB every second: drawn in steps, so that the snapshot
    # (and every open page) changes when the picture does, not on every reading.
    foreign = max(_step(total - available - measured), 0)
    available = total - measured - foreign
    sizes = {"measured": measured, "declared": min(declared, available), "foreign": foreign}
    sizes["free"] = max(total - sum(sizes.values()), 0)
    return {
        "total_mib": total,
        "headroom_mib": _step(ram["headroom_mib"]) if ram.get("headroom_mib") is not None else None,
        "segments": [
            {
                "kind": kind,
                "label": label,
                "mib": sizes[kind],
                "models": rows if kind in ("measured", "declared") else [],
            }
            for kind, label in RAM_SEGMENTS
        ],
    }


def _step(mib: int) -> int:
    return int(round(mib / RAM_STEP_MIB) * RAM_STEP_MIB)
