"""Slice routing's controls: ``GET /slices`` and ``POST /slices/kill-switch``.

``GET /slices``: the kill switch, the budgets and what is spent today, the per-slice tallies
(acceptance, latency, promotions, regret) and the last audit rows. ``POST /slices/kill-switch``
``{"on": true, "reason": "..."}`` forces every routed call to the largest slice until turned off
(or the daemon restarts); the log says who turned it and why.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from stackd.api.json_route import JsonBodyRoute
from stackd.errors import NotFound
from stackd.router.slices import SliceRouter
from stackd.services import Services


class KillSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    on: bool = Field(description="true: every routed call goes to the largest slice.")
    reason: str | None = Field(None, max_length=200, description="Why (logged and shown in /slices).")


def build_slices_router(
    services: Services, write: Callable[..., None], read: Callable[..., None]
) -> APIRouter:
    """Routes over ``services.slices``; an app built with a router and no slice router (API tests)
    gets one here, so the gateway, the tools and these routes share one set of controls."""
    if services.slices is None and services.router is not None:
        services.slices = SliceRouter(services.router)
    router = APIRouter(route_class=JsonBodyRoute)

    def slices() -> SliceRouter:
        if services.slices is None:
            raise NotFound("this daemon has no router, so no slice routing")
        return services.slices

    @router.get("/slices", dependencies=[Depends(read)])
    async def show() -> dict[str, object]:
        current = slices()
        body = current.status()
        body["recent"] = current.audit.recent(10) if current.audit is not None else []
        return body

    @router.post("/slices/kill-switch", dependencies=[Depends(write)])
    async def kill_switch(request: KillSwitch) -> dict[str, object]:
        current = slices()
        current.controls.set_kill_switch(request.on, request.reason)
        return current.controls.to_dict(current.routings())

    return router
