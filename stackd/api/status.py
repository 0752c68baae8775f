"""Status, roles, health and metrics routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stackd.drivers.health import health_url
from stackd.errors import NotFound
from stackd.services import Services
from stackd.views import redact_url


def build_status_router(services: Services, read: Callable[..., None], registry: Any) -> APIRouter:
    router = APIRouter()

    def role_row(role: str, model: str) -> dict[str, Any]:
        config = services.config  # read per call: a config reload replaces it
        m = config.models[model]
        endpoint = m.endpoint or (config.ollama.url if m.ollama else None)
        if m.remote is not None and m.health is None and endpoint:
            # a remote's cheap readiness check is its model list (no token spent)
            probe = f"{endpoint.rstrip('/')}/models"
        else:  # the URL the daemon's own health probes request
            probe = health_url(m, config.ollama.url)
        return {
            "role": role,
            "model": model,
            "endpoint": redact_url(endpoint),
            "health_url": redact_url(probe),
            "api": m.api.value,
            "placement": m.placement.value,
        }

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/roles", dependencies=[Depends(read)])
    async def roles() -> dict[str, Any]:
        table = services.roles.current
        return {
            "stack": table.stack,
            "version": table.version,
            "roles": [role_row(r, m) for r, m in sorted(table.bindings.items())],
        }

    @router.get("/roles/{role}", dependencies=[Depends(read)])
    async def role(role: str) -> dict[str, Any]:
        table = services.roles.current
        model = table.bindings.get(role)
        if model is None:
            raise NotFound(
                f"role '{role}' is not bound in stack '{table.stack}'; "
                f"bound roles: {', '.join(sorted(table.bindings)) or 'none'}"
            )
        return {"stack": table.stack, "version": table.version, **role_row(role, model)}

    @router.get("/status", dependencies=[Depends(read)])
    async def status() -> dict[str, Any]:
        body = await services.manager.status()
        if services.router is not None:
            body["router"] = services.router.stats()
        leases = services.leases
        body["leases"] = [leases.to_json(lease) for lease in leases.live()] if leases is not None else []
        return body

    @router.get("/usage", dependencies=[Depends(read)])
    async def usage() -> dict[str, Any]:
        rows = services.usage.summary() if services.usage is not None else []
        return {"rows": rows}

    @router.get("/metrics", dependencies=[Depends(read)])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
