"""Routes of the model stacks: list, inspect, plan, switch (and follow a switch)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stackd.api.answers import DryRunAnswer, StackAnswer, StacksAnswer, SwitchAnswer, documented
from stackd.api.json_route import JsonBodyRoute
from stackd.config.schedules import HOLD_PATTERN, hold_seconds
from stackd.planner.views import model_json, plan_json, stack_json
from stackd.services import Services

# One event of GET /model-stacks/switch/{id}/events as the OpenAPI document describes it.
SWITCH_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object", "required": ["type"]},
        },
    },
}

SWITCH_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": DryRunAnswer | SwitchAnswer, "description": "The plan (dry_run) or the switch."},
    202: {"model": SwitchAnswer, "description": "The switch, queued (wait: false)."},
}
SWITCH_EVENTS_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"text/event-stream": {"schema": SWITCH_EVENT}},
        "description": "The switch's events, one `event: TYPE` / `data: {...}` each.",
    }
}


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stack: str = Field(min_length=1, description="Name of the target stack.")
    dry_run: bool = Field(False, description="Plan only; change nothing.")
    wait: bool = Field(True, description="Answer when the switch has finished (false: answer 202 at once).")
    hold: str | None = Field(
        None,
        json_schema_extra={"pattern": HOLD_PATTERN},  # checked below, with the words of the fix
        description="How long the day policy keeps this stack: a duration within 7 days (2h, 90m, "
        "3600) or 'until-next' (the default for a manual switch: until the next schedule window begins).",
    )

    @field_validator("hold")
    @classmethod
    def _hold(cls, value: str | None) -> str | None:
        if value is not None:
            hold_seconds(value)  # raises with the fix
            if not re.match(HOLD_PATTERN, value):
                raise ValueError(
                    "write a hold in the largest unit that fits: at most 5 digits of seconds, 4 of "
                    "minutes, 2 of hours, or 1-7 days (3600, 90m, 36h, 5d), or 'until-next'"
                )
        return value


def known_stack(services: Services, name: str) -> None:
    """``NotFound`` naming the valid stacks, as the manager says it (its config is the daemon's)."""
    services.manager.known(name)


async def switch_stack(services: Services, request: SwitchRequest) -> dict[str, object]:
    """Plan (``dry_run``) or submit a switch, and wait for it when ``wait``: ``POST
    /model-stacks/switch``'s body (and the MCP ``switch_stack`` tool's)."""
    known_stack(services, request.stack)
    manager = services.manager
    if request.dry_run:
        return {"stack": request.stack, "dry_run": True, "plan": plan_json(await manager.plan(request.stack))}
    handle = await manager.submit_switch(request.stack)
    if services.day is not None:  # a manual switch holds its stack against the schedule and idleness
        services.day.hold(request.stack, hold_seconds(request.hold) if request.hold else None)
    if request.wait:
        await handle.wait()
    return manager.get_switch(handle.id).to_json()


async def stack_body(services: Services, name: str) -> dict[str, object]:
    """``GET /model-stacks/{name}``: the stack, its members' models and the plan to switch to it."""
    known_stack(services, name)
    config = services.config
    body = stack_json(config, name, services.manager.active_stack)
    body["members"] = [model_json(m, config.models[m]) for m in config.stacks[name].member_names]
    body["plan"] = plan_json(await services.manager.plan(name))
    return body


def switch_event_stream(services: Services, switch_id: str) -> StreamingResponse:
    """A switch's events as SSE, one ``event: TYPE`` / ``data: {...}`` each."""
    events = services.manager.events(switch_id)  # raises NotFound before the stream starts

    async def sse() -> AsyncIterator[bytes]:
        async for event in events:
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()

    return StreamingResponse(
        sse(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def build_stacks_router(
    services: Services, write: Callable[..., None], read: Callable[..., None]
) -> APIRouter:
    router = APIRouter(dependencies=[Depends(read)], route_class=JsonBodyRoute)
    manager = services.manager

    @router.get("/model-stacks", response_model=None, responses=documented(StacksAnswer))
    async def list_stacks() -> dict[str, object]:
        active = manager.active_stack
        return {
            "active": active,
            "default": services.config.default_stack,
            "stacks": [stack_json(services.config, name, active) for name in services.config.stacks],
        }

    @router.get("/model-stacks/{name}", response_model=None, responses=documented(StackAnswer))
    async def get_stack(name: str) -> dict[str, object]:
        return await stack_body(services, name)

    @router.post(
        "/model-stacks/switch",
        dependencies=[Depends(write)],
        response_model=None,
        responses=SWITCH_RESPONSES,
    )
    async def switch(request: SwitchRequest) -> dict[str, object] | JSONResponse:
        body = await switch_stack(services, request)
        return body if request.dry_run or request.wait else JSONResponse(body, status_code=202)

    @router.get(
        "/model-stacks/switch/{switch_id}",
        response_model=SwitchAnswer,
        response_model_exclude_unset=True,  # a journal switch's journal_state only when set
        responses=documented(SwitchAnswer),
    )
    async def get_switch(switch_id: str) -> SwitchAnswer:
        return manager.get_switch(switch_id)

    @router.get(
        "/model-stacks/switch/{switch_id}/events",
        response_class=StreamingResponse,
        responses=SWITCH_EVENTS_RESPONSES,
    )
    async def switch_events(switch_id: str) -> StreamingResponse:
        return switch_event_stream(services, switch_id)

    return router
