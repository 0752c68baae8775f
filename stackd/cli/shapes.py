"""The JSON the CLI reads from the daemon's answers, as TypedDicts: the keys its tables print.

Typing only (no pydantic here): the CLI imports its renderers at start, and a daemon's answer
reaches them as the decoded JSON the client checked against the route's model
(``DaemonClient.get`` with ``stackd.api.answers``). Every dict is ``total=False``: a renderer
reads an optional key with ``.get`` and a required one by index, as the route documents it.
``stackd.cli.usage_shapes`` holds the answers about calls (usage, slices, reason, keys, leases).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

# ---------------------------------------------------------------- GET /healthz


class Health(TypedDict, total=False):
    """Which daemon answered; ``url`` is the client's own (``/healthz`` does not send it)."""

    url: str
    pid: int
    version: str
    config: str
    state_dir: str
    token_source: str


# ---------------------------------------------------------------- a plan (POST /model-stacks/switch?dry_run, stackd plan)


class LedgerItem(TypedDict, total=False):
    model: str
    kind: str
    mib: float
    measured_mib: float | None


class VramLedger(TypedDict, total=False):
    device: int
    gpu_name: str
    simulated: bool
    items: list[LedgerItem]
    total_mib: float
    reserve_mib: float
    always_on_mib: float
    swap_budget_mib: float
    largest_swap_group: str | None
    headroom_mib: float


class RamLedger(TypedDict, total=False):
    always_on_mib: float
    on_demand_max_mib: float
    available_mib: float
    total_mib: float
    headroom_mib: float


class KvRow(TypedDict, total=False):
    """``stackd.planner.kv_row.KvRow`` as JSON."""

    model: str
    source: str
    kv_rule: str
    context_mib: float | None
    weights_mib: int
    overhead_mib: int
    room_mib: int | None
    sessions: list[tuple[int, float]]
    gpu_memory_utilization: float | None
    refused: bool
    kv_bytes_per_token: int
    mamba_state_bytes: int
    context_tokens: int | None
    kv_mib: float | None
    kv_tokens: int | None


class NodeItem(TypedDict):
    model: str
    gpus: int
    placed: bool


class LedgerNode(TypedDict, total=False):
    hostname: str
    up: bool
    gpus: int
    gpu_mib: float | None
    items: list[NodeItem]


class ClusterLedger(TypedDict, total=False):
    nodes: list[LedgerNode]


class Refusal(TypedDict):
    code: str
    message: str


class PlanShape(TypedDict, total=False):
    stack: str
    feasible: bool
    steps: list[Mapping[str, object]]  # each step's own keys: describe_step reads them
    vram: VramLedger | None
    ram: RamLedger | None
    kv: list[KvRow]
    cluster: ClusterLedger | None
    refusals: list[Refusal]


# ---------------------------------------------------------------- GET /model-stacks, GET /roles


class StackRow(TypedDict, total=False):
    name: str
    active: bool
    default: bool
    members: list[str]
    description: str


class StacksList(TypedDict, total=False):
    stacks: list[StackRow]
    active: str | None
    default: str | None


class RoleRow(TypedDict, total=False):
    role: str
    model: str
    endpoint: str | None
    health_url: str | None


class RolesAnswer(TypedDict, total=False):
    stack: str | None
    version: int
    roles: list[RoleRow]


# ---------------------------------------------------------------- GET /status


class GpuDevice(TypedDict, total=False):
    index: int
    name: str
    used_mib: float
    total_mib: float
    power_w: float | None
    power_limit_w: float | None
    util_pct: float | None


class GpuStatus(TypedDict, total=False):
    devices: list[GpuDevice]
    simulated: bool
    state: str
    vram: VramLedger | None
    kv: list[KvRow]


class Probe(TypedDict, total=False):
    ok: bool
    at: float
    error: str | None


class Process(TypedDict, total=False):
    pid: int | None
    port: int | None
    ready_at: float | None
    restarts: int | None


class Member(TypedDict, total=False):
    name: str
    in_stack: bool
    runtime: str
    placement: str
    memory_mib: float | None
    measured_mib: float | None
    state: str
    lifecycle: str | None
    last_probe: Probe | None
    detail: str | None
    log_tail: list[str]
    process: Process | None


class Lease(TypedDict, total=False):
    id: str
    model: str
    expires_in_s: float


class Window(TypedDict):
    index: int
    stack: str
    began: str


class NextChange(TypedDict):
    stack: str
    when: str


class Hold(TypedDict, total=False):
    stack: str
    until: float | None
    until_local: str | None
    source: str


class Idle(TypedDict):
    upper: str
    lower: str


class Schedule(TypedDict, total=False):
    """``GET /schedule``, and ``schedule`` in ``GET /status``."""

    configured: bool
    active: str | None
    intended: str | None
    timezone: str
    window: Window | None
    next_change: NextChange | None
    hold: Hold | None
    idle: Idle | None
    action: str
    why: str


class ClusterNode(TypedDict, total=False):
    hostname: str
    up: bool
    address: str
    labels: dict[str, str]
    gpus: list[str]


class ClusterStatus(TypedDict, total=False):
    error: str | None
    placed: dict[str, str]
    nodes: list[ClusterNode]


class Status(TypedDict, total=False):
    active_stack: str | None
    gpu: GpuStatus | None
    cluster: ClusterStatus | None
    members: list[Member]
    roles: dict[str, str]
    leases: list[Lease]
    recovery: object
    schedule: Schedule | None


# ---------------------------------------------------------------- a switch (POST /model-stacks/switch, its events)


class SwitchState(TypedDict, total=False):
    switch_id: str
    stack: str
    state: str


class SwitchEvent(TypedDict, total=False):
    """One event of ``GET /model-stacks/switch/{id}/events`` (``stackd.manager.events``)."""

    type: str
    step: Mapping[str, object] | None  # the step's own keys: describe_step reads them
    at: float | None
    total: int | None
    completed: int | None
    tag: str | None
    digest: str | None
    error: str | None
    timed_out: bool
    in_flight: int
    model: str
    state: str
    note: str | None


# ---------------------------------------------------------------- stackd ps (from GET /status)


class PsRow(TypedDict):
    """A line of ``stackd ps`` (and of its ``--json``)."""

    name: str
    runtime: str | None
    state: str | None
    pid: int | None
    port: int | None
    uptime_s: int | None
    restarts: int | None
    memory_mib: float | None
    measured_mib: float | None
    placement: str | None
