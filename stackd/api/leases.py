"""Lease routes: ``POST /leases`` starts an on-demand GPU model and leases it (waiting up to
``wait_s`` in the FIFO queue; 503 with ``Retry-After`` and the reason after that); ``GET /leases``
(the live leases and the queue); ``POST /leases/{id}/renew``; ``DELETE /leases/{id}`` (the model
keeps running until its idle TTL, unless a waiter needs its room)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from stackd.api.answers import LeaseAnswer, LeasesAnswer, documented
from stackd.api.json_route import JsonBodyRoute
from stackd.gpu.leases import LeaseCoordinator
from stackd.services import Services

MAX_TTL_S = 86400.0
MAX_WAIT_S = 3600.0


class LeaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="An on-demand GPU member of the active stack.")
    ttl_s: float | None = Field(
        None, gt=0, le=MAX_TTL_S, description="Seconds; default: the model's idle_ttl_s."
    )
    wait_s: float = Field(
        0.0,
        ge=0,
        le=MAX_WAIT_S,
        description="Seconds to wait in the FIFO queue when the model cannot be served now (a lease or "
        "another process holds the memory); after that the answer is 503 with Retry-After and the reason.",
    )


class RenewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_s: float | None = Field(
        None, gt=0, le=MAX_TTL_S, description="Seconds from now; default: the lease's."
    )


def build_leases_router(
    services: Services, write: Callable[..., None], read: Callable[..., None]
) -> APIRouter:
    """Routes over ``services.leases``, the one set of leases ``/status`` shows too."""
    leases: LeaseCoordinator = services.leases
    router = APIRouter(route_class=JsonBodyRoute)

    @router.post(
        "/leases", dependencies=[Depends(write)], response_model=None, responses=documented(LeaseAnswer)
    )
    async def acquire(request: LeaseRequest) -> dict[str, object]:
        return leases.to_json(await leases.acquire(request.model, request.ttl_s, request.wait_s))

    @router.get(
        "/leases", dependencies=[Depends(read)], response_model=None, responses=documented(LeasesAnswer)
    )
    async def list_leases() -> dict[str, object]:
        return {"leases": [leases.to_json(lease) for lease in leases.live()], "queue": leases.queue()}

    @router.post(
        "/leases/{lease_id}/renew",
        dependencies=[Depends(write)],
        response_model=None,
        responses=documented(LeaseAnswer),
    )
    async def renew(
        lease_id: str, request: Annotated[RenewRequest | None, Body()] = None
    ) -> dict[str, object]:
        return leases.to_json(await leases.renew(lease_id, request.ttl_s if request else None))

    @router.delete(
        "/leases/{lease_id}",
        dependencies=[Depends(write)],
        response_model=None,
        responses=documented(LeaseAnswer),
    )
    async def release(lease_id: str) -> dict[str, object]:
        return {**leases.to_json(await leases.release(lease_id)), "released": True}

    return router
