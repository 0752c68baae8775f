"""The shapes of the control API's answers, shared by the routes (the OpenAPI document) and the
CLI's client (which checks every answer it reads against the same model).

Each model describes the JSON a route returns, key by key, frozen. The answers typed where they
are made (a switch, a stack's summary, a member: ``stackd.planner.views``) are those very classes,
served as the route's ``response_model``; the others are still assembled as dicts and documented
with ``responses=``. None is ``extra="allow"``: unknown keys are ignored when the CLI parses an
answer (pydantic's default), so a newer daemon's key breaks no older CLI, and the schema stays
open for the keys other parts add to ``/status`` (the router's stats, the slices, the schedule).
``tests/integration/test_schemathesis.py`` checks every real answer against these schemas, and
``tests/unit/test_api_answers.py`` every answer of the in-memory daemon.

Only pydantic and the planner's values are imported, so the CLI does not load FastAPI.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from stackd.planner.plan import Plan
from stackd.planner.views import JsonObject, MemberView, StackSummary, SwitchAnswer, View

__all__ = ["MemberView", "StackSummary", "SwitchAnswer"]  # the views answered as they are made


# ---------------------------------------------------------------- stacks
class StacksAnswer(View):
    """``GET /model-stacks``."""

    active: str | None
    default: str
    stacks: list[StackSummary]


class StackAnswer(View):
    """``GET /model-stacks/{name}``: the stack, its members and the plan to switch to it now."""

    name: str
    description: str | None
    active: bool
    default: bool
    members: list[MemberView]
    roles: dict[str, str]
    reason_chain: list[str]
    plan: Plan


class DryRunAnswer(View):
    """``POST /model-stacks/switch`` with ``dry_run``: the plan, nothing changed."""

    stack: str
    dry_run: bool
    plan: Plan


# ---------------------------------------------------------------- roles, status, usage
class RoleRow(View):
    role: str
    model: str
    endpoint: str | None
    health_url: str | None
    api: str
    placement: str
    health: str = Field(description="ok, unprobed, degraded or unhealthy: the verdict /status shows too.")


class RolesAnswer(View):
    """``GET /roles``: the live role table."""

    stack: str | None
    version: int
    roles: list[RoleRow]


class RoleAnswer(RoleRow):
    """``GET /roles/{role}``."""

    stack: str | None
    version: int


class MemberStatus(View):
    name: str
    runtime: str
    placement: str
    memory_mib: int
    measured_mib: int | None
    lifecycle: str
    in_stack: bool
    state: str
    detail: str | None
    last_probe: JsonObject | None


class GpuDevice(View):
    index: int
    name: str
    total_mib: int
    used_mib: int
    free_mib: int


class GpuStatus(View):
    state: str
    source: str
    simulated: bool
    devices: list[GpuDevice]
    vram: JsonObject | None = Field(description="The active stack's VRAM ledger (as in a Plan).")


class StatusAnswer(View):
    """``GET /status``: built from one observation, so every part agrees."""

    active_stack: str | None
    members: list[MemberStatus]
    roles: dict[str, str]
    roles_version: int
    roles_stack: str | None
    degraded: list[JsonObject]
    drift: list[str]
    engines: dict[str, str] = Field(description="docker / ollama: 'ok' or why not.")
    switch_in_progress: JsonObject | None
    last_switch: JsonObject | None
    recovery: str | None
    recovery_detail: JsonObject | None
    periodic: dict[str, JsonObject]
    gpu: GpuStatus
    ram: JsonObject | None
    leases: list[JsonObject]


class UsageRow(View):
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


class UsageAnswer(View):
    """``GET /usage``: totals per (strategy, backend) from the usage ledger."""

    rows: list[UsageRow]


# ---------------------------------------------------------------- leases, config
class LeaseAnswer(View):
    """A lease (``POST /leases``, ``.../renew``; ``DELETE`` adds ``released``)."""

    id: str
    model: str
    acquired_at: float
    expires_at: float
    expires_in_s: float
    ttl_s: float | None
    endpoint: str | None


class LeaseWaiter(View):
    id: str
    model: str
    position: int
    waited_s: float
    deadline_in_s: float
    reason: str


class LeasesAnswer(View):
    """``GET /leases``: the live leases and the queue of requests waiting for one."""

    leases: list[LeaseAnswer]
    queue: list[LeaseWaiter]


class ReloadAnswer(View):
    """``POST /config/reload``."""

    reloaded: str = Field(description="The config file read.")
    stacks: list[str]


def documented(model: type[BaseModel], status: int = 200) -> dict[int | str, JsonObject]:
    """``responses=`` of a route whose answer ``model`` describes (the route returns its dict)."""
    return {status: {"model": model, "description": model.__doc__ or "OK"}}
