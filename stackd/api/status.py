"""Status, roles, health and metrics routes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from stackd import __version__
from stackd.api.answers import RoleAnswer, RolesAnswer, StatusAnswer, UsageAnswer, documented
from stackd.config.models import Runtime
from stackd.drivers.health import health_url
from stackd.drivers.remote import probe_request
from stackd.errors import NotFound
from stackd.planner.views import redact_url
from stackd.services import Services
from stackd.state.usage_series import UsageSeries, usage_series

if TYPE_CHECKING:  # prometheus_client is loaded at the first scrape
    from prometheus_client import CollectorRegistry


class Health(BaseModel):
    """``GET /healthz``: alive, and which daemon this is, so a CLI can tell whom it reached and
    find its token. On a non-loopback bind (open to the network) it says only ``status``,
    ``version`` and ``stack_active``: the paths and the PID are for the user on the same machine."""

    status: str = "ok"
    version: str = Field(description="stackd's version.")
    stack_active: bool = Field(
        True,
        description="Whether a stack is active. False while none is (the first start is still "
        "applying one, or no stack of default_stack and fallback_stacks could run here): the "
        "image's HEALTHCHECK then fails, and `stackd status` says why.",
    )
    url: str | None = Field(None, description="The URL the daemon listens on.")
    pid: int | None = Field(None, description="The daemon's process id.")
    config: str | None = Field(None, description="Absolute path of the config file it runs.")
    state_dir: str | None = Field(None, description="Absolute path of its state dir (the 'token' file).")
    token_source: str | None = Field(
        None, description="Where the daemon read its token: the token file's path, or STACKD_TOKEN."
    )


def daemon_health(services: Services) -> Health:
    settings = services.settings
    if not settings.loopback:
        return Health(version=__version__)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # an IPv6 literal
    return Health(
        version=__version__,
        url=f"http://{host}:{settings.port}",
        pid=os.getpid(),
        config=str(settings.config.absolute()),
        state_dir=str(settings.state_dir.absolute()),
        token_source=services.token_source,
    )


async def daemon_status(services: Services) -> dict[str, Any]:
    """``GET /status``'s body (and the MCP ``status`` tool's): the manager's view, the router's
    stats and the live leases."""
    body = await services.manager.status()
    if services.router is not None:
        body["router"] = services.router.stats()
    if services.slices is not None:
        body["slices"] = services.slices.status()
    leases = services.leases
    body["leases"] = [leases.to_json(lease) for lease in leases.live()] if leases is not None else []
    body["schedule"] = services.day.view() if services.day is not None else None
    return body


class RoleRow(TypedDict):
    """A role of ``/roles``: its model, where it answers and how its health is probed."""

    role: str
    model: str
    endpoint: str | None
    health_url: str | None
    api: str
    placement: str
    health: Literal["ok", "unprobed", "degraded", "unhealthy"]  # the verdict status shows too


def role_row(services: Services, role: str, model: str) -> RoleRow:
    config = services.config  # read per call: a config reload replaces it
    m = config.models[model]
    live = services.endpoints.get(model)  # a process member's port is picked at its start
    endpoint = live or m.endpoint or (config.ollama.url if m.ollama else None)
    if m.runtime == Runtime.remote and m.endpoint:
        # what the remote prober requests: its model list in the API's own flavour (no token spent)
        probe = probe_request(m, None)[0]
    else:  # the URL the daemon's own health probes request
        probe = health_url(m, config.ollama.url, live)
    return {
        "role": role,
        "model": model,
        "endpoint": redact_url(endpoint),
        "health_url": redact_url(probe),
        "api": m.api.value,
        "placement": m.placement.value,
        "health": services.manager.verdict(model).health,
    }


def role_body(services: Services, role: str) -> dict[str, object]:
    """``GET /roles/{role}``: the row of a bound role, with the stack and the table's version."""
    table = services.roles.current
    model = table.bindings.get(role)
    if model is None:
        raise NotFound(
            f"role '{role}' is not bound in stack '{table.stack}'; "
            f"bound roles: {', '.join(sorted(table.bindings)) or 'none'}"
        )
    return {"stack": table.stack, "version": table.version, **role_row(services, role, model)}


def usage_body(services: Services) -> dict[str, object]:
    """``GET /usage``: the ledger's rows, the slices served and this run's tallies, the energy."""
    rows = services.usage.summary() if services.usage is not None else []
    slices = services.slices
    audit = slices.audit.summary() if slices is not None and slices.audit is not None else []
    tallies = slices.stats.to_dict() if slices is not None else {}
    energy = services.power.store.by_stack() if services.power and services.power.store else []
    return {"rows": rows, "slices": {"served": audit, "since_start": tallies}, "energy": energy}


def build_status_router(
    services: Services, read: Callable[..., None], registry: Callable[[], CollectorRegistry]
) -> APIRouter:
    """``registry()`` is what ``/metrics`` exposes; it is first called at the first scrape."""
    router = APIRouter()
    health = daemon_health(services)  # the settings are frozen: computed once

    @router.get("/healthz")
    async def healthz() -> Health:
        manager = services.manager  # None in an app built for the API alone (tests, gen-docs)
        if manager is not None and manager.active_stack is None:
            return health.model_copy(update={"stack_active": False})
        return health

    add_role_routes(router, services, read)

    @router.get(
        "/status", dependencies=[Depends(read)], response_model=None, responses=documented(StatusAnswer)
    )
    async def status() -> dict[str, Any]:
        return await daemon_status(services)

    @router.get("/schedule", dependencies=[Depends(read)], response_model=None)
    async def schedule() -> dict[str, object]:
        """The day policy: the window current now, the next change, a hold, an idle downshift, and
        what it means to do and why (null parts when the config has no schedules: or idle:)."""
        if services.day is None:
            return {"configured": False}
        return {"configured": True, **services.day.view()}

    add_usage_routes(router, services, read)

    @router.get("/metrics", dependencies=[Depends(read)], response_class=PlainTextResponse)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # loaded when scraped

        return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)

    return router


def add_role_routes(router: APIRouter, services: Services, read: Callable[..., None]) -> None:
    """``GET /roles`` and ``GET /roles/{role}``: the active stack's bindings, as ``role_row``."""

    @router.get(
        "/roles", dependencies=[Depends(read)], response_model=None, responses=documented(RolesAnswer)
    )
    async def roles() -> dict[str, object]:
        table = services.roles.current
        return {
            "stack": table.stack,
            "version": table.version,
            "roles": [role_row(services, r, m) for r, m in sorted(table.bindings.items())],
        }

    @router.get(
        "/roles/{role}", dependencies=[Depends(read)], response_model=None, responses=documented(RoleAnswer)
    )
    async def role(role: str) -> dict[str, object]:
        return role_body(services, role)


def add_usage_routes(router: APIRouter, services: Services, read: Callable[..., None]) -> None:
    """``GET /usage`` and ``GET /usage/series``: the usage ledger, summed and over time."""

    @router.get(
        "/usage", dependencies=[Depends(read)], response_model=None, responses=documented(UsageAnswer)
    )
    async def usage() -> dict[str, object]:
        return usage_body(services)

    @router.get("/usage/series", dependencies=[Depends(read)], response_model=None)
    async def usage_series_route(
        window_s: Annotated[float, Query(gt=0, le=7 * 86400)] = 3600,
        bucket_s: Annotated[float, Query(ge=1, le=86400)] = 60,
    ) -> UsageSeries:
        """Calls, failures, tokens/s and p50/p95 latency per backend, in buckets of ``bucket_s``
        over the last ``window_s`` seconds, from the usage ledger (``stackd.state.usage_series``)."""
        now = time.time()
        samples = services.usage.samples(now - window_s) if services.usage is not None else []
        return usage_series(samples, now, window_s, bucket_s)
