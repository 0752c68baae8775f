"""The views the API answers with, typed where they are made: frozen pydantic values that the
planner and the manager build, the routes serve as their ``response_model``, and the CLI's client
parses (``stackd.api.answers`` names them beside the routes' other answers).

A view declares every key it has, in the order the JSON carries them; a key present only
sometimes (a journal switch's ``journal_state``) has a default and is left unset, and the routes
serialise with ``exclude_unset`` so such a key is absent rather than null. Unknown keys are
ignored on parse (pydantic's default, never ``extra="allow"``): a newer daemon's key breaks no
older CLI, and the daemon cannot add one, since it builds the value.

Light on purpose: the CLI imports this module, so the config models are named for the type
checker only and the plan's adapter is built on first use.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from stackd.planner.plan import Plan

if TYPE_CHECKING:
    from stackd.config.models import Model, StacksConfig

# A JSON object whose keys another part owns (a plan's step, an event): carried, never read here.
JsonObject = dict[str, object]


class View(BaseModel):
    """A frozen answer value. ``defer_build``: the validator is built on first use, not at import,
    so the CLI, which validates one answer per command, starts in ~0.3 s."""

    model_config = ConfigDict(frozen=True, defer_build=True)


@cache
def _plan_adapter() -> TypeAdapter[Plan]:
    return TypeAdapter(Plan)


def plan_json(plan: Plan) -> JsonObject:
    body: JsonObject = _plan_adapter().dump_python(plan, mode="json")
    return body


def redact_url(url: str | None) -> str | None:
    """Drop userinfo and query from a URL: a key placed there through ${VAR} never leaves."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# ---------------------------------------------------------------- stacks and members
class MemberView(View):
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


class StackSummary(View):
    name: str
    description: str | None
    active: bool
    default: bool
    members: list[str]
    roles: dict[str, str] = Field(description="role -> model in this stack.")
    reason_chain: list[str] = Field(description="The strategies reason() tries, in order.")


def member_view(name: str, model: Model) -> MemberView:
    """A member as the API shows it. Secrets: only the *name* of the key's env var appears."""
    return MemberView(
        name=name,
        runtime=model.runtime.value,
        placement=model.placement.value,
        api=model.api.value,
        endpoint=redact_url(model.endpoint),
        memory_mib=model.memory_mib,
        lifecycle=model.lifecycle.value,
        swap_group=model.swap_group,
        container=model.docker.container if model.docker else None,
        ollama_tag=model.ollama.tag if model.ollama else None,
        api_key_env=model.remote.api_key_env if model.remote else None,
        description=model.description,
    )


def stack_summary(config: StacksConfig, name: str, active: str | None) -> StackSummary:
    stack = config.stacks[name]
    return StackSummary(
        name=name,
        description=stack.description,
        active=name == active,
        default=name == config.default_stack,
        members=list(stack.member_names),
        roles=dict(stack.roles),
        reason_chain=config.chain_for(name),
    )


def model_json(name: str, model: Model) -> JsonObject:
    """``member_view`` as a JSON object (for bodies still assembled as dicts)."""
    return member_view(name, model).model_dump(mode="json")


def stack_json(config: StacksConfig, name: str, active: str | None) -> JsonObject:
    """``stack_summary`` as a JSON object (the status page's snapshot)."""
    return stack_summary(config, name, active).model_dump(mode="json")


# ---------------------------------------------------------------- switches
class SwitchAnswer(View):
    """A switch: live (this daemon's run) or from the journal (``journal_state`` set, no events)."""

    switch_id: str
    kind: str
    stack: str
    from_stack: str | None
    state: str = Field(description="queued, running, succeeded, rolled_back or failed.")
    journal_state: str | None = Field(None, description="A journal switch's own state (absent when live).")
    error: str | None
    note: str | None
    plan: JsonObject | None = Field(description="The plan it applies (a Plan, as in dry runs).")
    steps_done: list[JsonObject]
    failed_step: JsonObject | None
    undone: list[JsonObject]
    degraded: list[JsonObject]
    events: list[JsonObject] = Field(description="Every event so far (GET .../events streams them).")
    started_at: float | None
    finished_at: float | None

    def to_json(self) -> JsonObject:
        """The JSON the API writes: a journal switch's ``journal_state`` only when set."""
        return self.model_dump(mode="json", exclude_unset=True)
