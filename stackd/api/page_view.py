"""What the status page shows, computed from the parts of ``/status``: pure, no I/O.

The page (``stackd/api/page_assets/``) draws what ``page_snapshot`` returns and computes nothing
itself but widths and colours. The GPU ledger becomes a bar of six segments, in this order:

    always_on       the active stack's always-on GPU members (measured where running, else configured)
    leased          on-demand members a live lease holds
    idle_on_demand  on-demand members resident without a lease (until their idle TTL or a rival's lease)
    foreign         what other processes hold on the card (NVML's used minus stackd's members)
    reserve         ``gpu.reserve_gb`` beyond what the foreign processes already take
    free            the rest of the card

A segment is always present (``mib`` 0 when empty) so that the page's legend is stable.
Nothing secret reaches the snapshot: ``/status`` carries no token or key, URLs are redacted
there, and the calls are the router's attempt records (no prompt, no answer).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypedDict

from stackd.api.page_members import BarModel, MemberCard, RamBar, counts, member_card, ram_bar
from stackd.api.page_notices import Notice, drift_held, notices
from stackd.manager.events import describe_step

SEGMENTS: tuple[tuple[str, str], ...] = (
    ("always_on", "always-on"),
    ("leased", "leased"),
    ("idle_on_demand", "idle on-demand"),
    ("foreign", "foreign processes"),
    ("reserve", "reserve"),
    ("free", "free"),
)
RESIDENT_STATES = frozenset({"running", "loaded", "unhealthy", "restarting"})


class GpuSegment(TypedDict):
    kind: str
    label: str
    mib: int
    measured: bool  # every model in it was measured
    declared_mib: int | None  # None for the reserve and the free space
    models: list[BarModel]


class GpuBar(TypedDict):
    gpu_name: str | None
    total_mib: int
    headroom_mib: int | None
    simulated: bool
    segments: list[GpuSegment]


class GpuView(TypedDict):
    state: str | None
    source: str | None
    simulated: bool
    devices: int
    bar: GpuBar | None
    power: list[dict[str, object]]


class StepRow(TypedDict):
    step: str  # the step as a phrase (``describe_step``)
    state: str
    error: object


class SwitchRow(TypedDict):
    switch_id: object
    kind: object
    stack: object
    from_stack: object
    state: object
    error: object
    started_at: object
    finished_at: object
    steps: list[StepRow]


class StackRow(TypedDict):
    name: object
    description: object
    active: bool


class PageSnapshot(TypedDict):
    """Everything the page shows (``page_snapshot``)."""

    active_stack: str | None
    switch_in_progress: object
    counts: dict[str, int]
    stacks: list[StackRow]
    gpu: GpuView
    schedule: str | None
    ram: RamBar | None
    members: list[MemberCard]
    roles: list[dict[str, str]]
    leases: list[dict[str, object]]
    switches: list[SwitchRow]
    calls: list[Mapping[str, object]]
    notices: list[Notice]
    drift_held: bool


def gpu_bar(
    vram: Mapping[str, Any] | None, members: Sequence[Mapping[str, object]], leased: Iterable[str]
) -> GpuBar | None:
    """The ledger as the bar's segments (see the module's docstring); None without a GPU ledger."""
    if not vram:
        return None
    held = set(leased)
    resident = {m["name"] for m in members if m.get("state") in RESIDENT_STATES}
    parts: dict[str, list[BarModel]] = {kind: [] for kind, _ in SEGMENTS}
    foreign = 0
    for item in vram.get("items", ()):
        kind, model = item["kind"], item["model"]
        row: BarModel = {"name": model, "mib": item["mib"], "measured_mib": item.get("measured_mib")}
        if kind == "always_on":
            parts["always_on"].append(row)
        elif kind == "on_demand" and model in held:
            parts["leased"].append(row)
        elif kind == "on_demand" and model in resident:
            parts["idle_on_demand"].append(row)
        elif kind == "foreign":
            foreign += item["mib"]
            parts["foreign"].append(row)
    reserve = max(int(vram.get("reserve_mib", 0)) - foreign, 0)
    if reserve:
        parts["reserve"].append({"name": "gpu.reserve_gb", "mib": reserve, "measured_mib": None})
    total = int(vram["total_mib"])
    sizes = {kind: sum(_size(row) for row in rows) for kind, rows in parts.items()}
    sizes["free"] = max(total - sum(sizes.values()), 0)
    segments: list[GpuSegment] = [
        {
            "kind": kind,
            "label": label,
            "mib": sizes[kind],
            "measured": bool(parts[kind]) and all(r["measured_mib"] is not None for r in parts[kind]),
            "declared_mib": sum(int(r["mib"]) for r in parts[kind])
            if kind not in ("reserve", "free")
            else None,
            "models": parts[kind],
        }
        for kind, label in SEGMENTS
    ]
    return {
        "gpu_name": vram.get("gpu_name"),
        "total_mib": total,
        "headroom_mib": vram.get("headroom_mib"),
        "simulated": bool(vram.get("simulated")),
        "segments": segments,
    }


def _size(row: BarModel) -> int:
    measured = row.get("measured_mib")
    return int(measured if measured is not None else row["mib"])


def switch_steps(switch: Mapping[str, object]) -> list[StepRow]:
    """A switch's steps as a list of ``{"step": phrase, "state": ..., "error": ...}``: from its
    events while this daemon runs it (started, done, failed, undone), else from the journal's
    steps done (a switch of an earlier run)."""
    steps: dict[str, StepRow] = {}
    for event in _mappings(switch.get("events")):
        step = event.get("step")
        if not isinstance(step, Mapping):
            continue
        phrase = describe_step(step)
        match event["type"]:
            case "step_started":
                steps[phrase] = {"step": phrase, "state": "running", "error": None}
            case "step_done":
                steps[phrase] = {"step": phrase, "state": "done", "error": None}
            case "step_failed":
                steps[phrase] = {"step": phrase, "state": "failed", "error": event.get("error")}
            case "undo_step":
                state = "undone" if event.get("ok") else "undo failed"
                steps[phrase] = {"step": phrase, "state": state, "error": event.get("error")}
    if not steps:
        for step in _mappings(switch.get("steps_done")):
            phrase = describe_step(step)
            steps[phrase] = {"step": phrase, "state": "done", "error": None}
    return list(steps.values())


def _mappings(value: object) -> Iterator[Mapping[str, object]]:
    """The JSON objects of a list (of a switch's record); nothing when it is not one."""
    if isinstance(value, list | tuple):
        yield from (item for item in value if isinstance(item, Mapping))


def switch_row(switch: Mapping[str, object]) -> SwitchRow:
    return {
        "switch_id": switch.get("switch_id"),
        "kind": switch.get("kind"),
        "stack": switch.get("stack"),
        "from_stack": switch.get("from_stack"),
        "state": switch.get("state"),
        "error": switch.get("error"),
        "started_at": switch.get("started_at"),
        "finished_at": switch.get("finished_at"),
        "steps": switch_steps(switch),
    }


def page_snapshot(
    status: Mapping[str, Any],
    stacks: Sequence[Mapping[str, object]],
    switches: Sequence[Mapping[str, object]],
    calls: Sequence[Mapping[str, object]],
    log_tails: Mapping[str, list[str]],
    now: float,
) -> PageSnapshot:
    """Everything the page shows, from ``/status``'s body, the stacks (``stack_json``), the
    recent switches (``recent_switches``), the recent calls and each member's last log lines
    (health probes are dropped from them here); ``now`` (epoch seconds) holds drift back around
    a switch (``page_notices``)."""
    members = [member_card(m, log_tails.get(m["name"]) or []) for m in status.get("members", ())]
    leases = list(status.get("leases") or ())
    gpu = status.get("gpu") or {}
    return {
        "active_stack": status.get("active_stack"),
        "switch_in_progress": status.get("switch_in_progress"),
        "counts": counts(members),
        "stacks": [
            {"name": s["name"], "description": s.get("description"), "active": bool(s.get("active"))}
            for s in stacks
        ],
        "gpu": {
            "state": gpu.get("state"),
            "source": gpu.get("source"),
            "simulated": bool(gpu.get("simulated")),
            "devices": len(gpu.get("devices") or ()),
            "bar": gpu_bar(gpu.get("vram"), members, (lease["model"] for lease in leases)),
            "power": [  # NVML's board power and load where the card reports them (issue 27)
                {k: d.get(k) for k in ("index", "name", "power_w", "power_limit_w", "util_pct")}
                for d in gpu.get("devices") or ()
                if d.get("power_w") is not None
            ],
        },
        "schedule": schedule_line(status.get("schedule")),
        "ram": ram_bar(status.get("ram"), members),
        "members": members,
        "roles": [{"role": r, "model": m} for r, m in (status.get("roles") or {}).items()],
        "leases": [{k: lease.get(k) for k in ("id", "model", "expires_in_s", "ttl_s")} for lease in leases],
        "switches": [switch_row(s) for s in switches],
        "calls": list(calls),
        "notices": notices(status, now),
        "drift_held": drift_held(status, now),
    }


def schedule_line(schedule: Mapping[str, Any] | None) -> str | None:
    """The day policy (``/status``'s ``schedule``) in one line: why this stack, the window, the
    next change and a hold; None without a day policy."""
    if not schedule:
        return None
    parts = [str(schedule.get("why") or schedule.get("action") or "")]
    window, upcoming, hold = schedule.get("window"), schedule.get("next_change"), schedule.get("hold")
    if window:
        parts.append(f"window '{window.get('stack')}' since {window.get('began')}")
    if upcoming:
        parts.append(f"next '{upcoming.get('stack')}' at {upcoming.get('when')}")
    if hold and hold.get("until_local"):  # a hold for good is what ``why`` says already
        parts.append(f"held on '{hold.get('stack')}' until {hold['until_local']}")
    return " · ".join(p for p in parts if p)
