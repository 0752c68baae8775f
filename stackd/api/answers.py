"""The shapes of the control API's answers, shared by the routes (the OpenAPI document) and the
CLI's client (which checks every answer it reads against the same model).

Each model describes the JSON a route returns today, key by key. They are *open*
(``extra="allow"``): a part that adds a key to an answer (the router's stats in ``/status``, the
slices) breaks no reader, and a key is never dropped on the way. The routes build their bodies as
before and document them with ``responses=``, so the JSON keeps its keys in the order the code
writes them; ``tests/integration/test_schemathesis.py`` checks every real answer against these
schemas, and ``tests/unit/test_api_answers.py`` every answer of the in-memory daemon.

Only pydantic and the planner's values are imported, so the CLI does not load FastAPI.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stackd.planner.plan import Plan


class Open(BaseModel):
    # defer_build: a model's validator is built when it first validates (or its schema is asked
    # for), not at import; the CLI validates one answer per command and starts in ~0.3 s.
    model_config = ConfigDict(extra="allow", defer_build=True)


# ---------------------------------------------------------------- stacks
class StackSummary(Open):
    name: str
    description: str | None
    active: bool
    default: bool
    members: list[str]
    roles: dict[str, str] = Field(description="role -> model in this stack.")
    reason_chain: list[str] = Field(description="The strategies reason() tries, in order.")


class StacksAnswer(Open):
    """``GET /model-stacks``."""

    active: str | None
    default: str
    stacks: list[StackSummary]


class MemberView(Open):
    """A member as the API shows it: only the *name* of its key's variable, never the key."""

    name: str
    runtime: str
    placement: str
    api: str
    endpoint: str | None
    memory_mib: int
    lifecycle: str
    swap_group: str | None
    container: str | None
    ollama_tag: str | None
    api_key_env: str | None
    description: str | None


class StackAnswer(Open):
    """``GET /model-stacks/{name}``: the stack, its members and the plan to switch to it now."""

    name: str
    description: str | None
    active: bool
    default: bool
    members: list[MemberView]
    roles: dict[str, str]
    reason_chain: list[str]
    plan: Plan


class DryRunAnswer(Open):
    """``POST /model-stacks/switch`` with ``dry_run``: the plan, nothing changed."""

    stack: str
    dry_run: bool
    plan: Plan


class SwitchAnswer(Open):
    """A switch: live (this daemon's run) or from the journal (``journal_state`` set, no events)."""

    switch_id: str
    kind: str
    stack: str
    from_stack: str | None
    state: str = Field(description="queued, running, succeeded, rolled_back or failed.")
    error: str | None
    note: str | None
    plan: dict[str, Any] | None = Field(description="The plan it applies (a Plan, as in dry runs).")
    steps_done: list[dict[str, Any]]
    failed_step: dict[str, Any] | None
    undone: list[dict[str, Any]]
    degraded: list[dict[str, Any]]
    events: list[dict[str, Any]] = Field(description="Every event so far (GET .../events streams them).")
    started_at: float | None
    finished_at: float | None


# ---------------------------------------------------------------- roles, status, usage
class RoleRow(Open):
    role: str
    model: str
    endpoint: str | None
    health_url: str | None
    api: str
    placement: str
    health: str = Field(description="ok, unprobed, degraded or unhealthy: the verdict /status shows too.")


class RolesAnswer(Open):
    """``GET /roles``: the live role table."""

    stack: str | None
    version: int
    roles: list[RoleRow]


class RoleAnswer(RoleRow):
    """``GET /roles/{role}``."""

    stack: str | None
    version: int


class MemberStatus(Open):
    name: str
    runtime: str
    placement: str
    memory_mib: int
    measured_mib: int | None
    lifecycle: str
    in_stack: bool
    state: str
    detail: str | None
    last_probe: dict[str, Any] | None


class GpuDevice(Open):
    index: int
    name: str
    total_mib: int
    used_mib: int
    free_mib: int


class GpuStatus(Open):
    state: str
    source: str
    simulated: bool
    devices: list[GpuDevice]
    vram: dict[str, Any] | None = Field(description="The active stack's VRAM ledger (as in a Plan).")


class StatusAnswer(Open):
    """``GET /status``: built from one observation, so every part agrees."""

    active_stack: str | None
    members: list[MemberStatus]
    roles: dict[str, str]
    roles_version: int
    roles_stack: str | None
    degraded: list[dict[str, Any]]
    drift: list[Any]
    engines: dict[str, str] = Field(description="docker / ollama: 'ok' or why not.")
    switch_in_progress: dict[str, Any] | None
    last_switch: dict[str, Any] | None
    recovery: str | None
    recovery_detail: dict[str, Any] | None
    periodic: dict[str, dict[str, Any]]
    gpu: GpuStatus
    ram: dict[str, Any] | None
    leases: list[dict[str, Any]]


class UsageRow(Open):
    strategy: str
    backend: str
    requests: int
    answered: int
    skipped: int
    failures: dict[str, int]
    mean_first_token_ms: float | None
    mean_total_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: int = Field(0, description="Answers whose token figures are stackd's count.")
    tokens_unknown: int = Field(0, description="Answers with a token figure nobody could count.")
    cost_usd: float


class UsageAnswer(Open):
    """``GET /usage``: totals per (strategy, backend) from the usage ledger."""

    rows: list[UsageRow]


# ---------------------------------------------------------------- leases, config
class LeaseAnswer(Open):
    """A lease (``POST /leases``, ``.../renew``; ``DELETE`` adds ``released``)."""

    id: str
    model: str
    acquired_at: float
    expires_at: float
    expires_in_s: float
    ttl_s: float | None
    endpoint: str | None


class LeaseWaiter(Open):
    id: str
    model: str
    position: int
    waited_s: float
    deadline_in_s: float
    reason: str


class LeasesAnswer(Open):
    """``GET /leases``: the live leases and the queue of requests waiting for one."""

    leases: list[LeaseAnswer]
    queue: list[LeaseWaiter]


class ReloadAnswer(Open):
    """``POST /config/reload``."""

    reloaded: str = Field(description="The config file read.")
    stacks: list[str]


def documented(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route whose answer ``model`` describes (the route returns its dict)."""
    return {status: {"model": model, "description": model.__doc__ or "OK"}}
