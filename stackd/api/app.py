"""The FastAPI app factory: routes, auth and error mapping over already-built services."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.routing import BaseRoute

from stackd import __version__
from stackd.api.auth import admitted_guard, open_guard
from stackd.api.config_routes import build_config_router
from stackd.api.dispatch import FrontDoor, StackdApp, hot_routes
from stackd.api.errors import install_error_handlers
from stackd.api.gate import Gate
from stackd.api.keyring import Keyring
from stackd.api.keys_routes import build_keys_router
from stackd.api.leases import build_leases_router
from stackd.api.limits import KeyMeter
from stackd.api.mcp_server import MCP_PATH, McpServer
from stackd.api.member_actions import build_member_actions_router
from stackd.api.member_logs import ContainerLogs, build_member_logs_router
from stackd.api.openapi_doc import install_openapi
from stackd.api.page import build_page_router
from stackd.api.request_body import BodyLimits
from stackd.api.stacks import build_stacks_router
from stackd.api.status import build_status_router
from stackd.config.loader import load_config as load
from stackd.config.models import StacksConfig
from stackd.services import Services
from stackd.state.keys import KeyedUsageStore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    services: Services,
    lifespan: Lifespan | None = None,
    registry: CollectorRegistry | Callable[[], CollectorRegistry] | None = None,
    load_config: Callable[[], StacksConfig] | None = None,
    container_logs: ContainerLogs | None = None,
) -> FastAPI:
    """Build the app. Mutating endpoints need the bearer token; on a non-loopback bind every
    endpoint but /healthz does. ``registry`` is what ``/metrics`` exposes, or a function that
    makes it at the first scrape (the daemon's: prometheus_client is loaded only when scraped). ``load_config`` re-reads the config for ``POST /config/reload``
    (default: the settings' file, as is); ``container_logs`` reads docker members' logs for
    ``GET /members/{name}/logs`` (the daemon's: ``DockerLogs``). A ``FrontDoor`` sees every request first: it bounds
    bodies, checks the token before any body is read and serves the hot paths itself."""
    settings = services.settings
    gate = build_gate(services)
    write = admitted_guard  # the gate decided by the scope table; the routes only check it did
    mcp = McpServer(services, write, settings.max_gateway_body_bytes, gate)
    app = StackdApp(title="stackd", version=__version__, lifespan=_serving(mcp, lifespan or _no_lifespan))
    install_error_handlers(app)
    read = open_guard if services.settings.loopback else write
    app.include_router(
        build_keys_router(gate.keyring, gate.meter, services.keys, services.audit, write, read)
    )
    app.include_router(build_status_router(services, read, _scraped(registry, gate)))
    app.include_router(build_stacks_router(services, write, read))
    app.include_router(build_leases_router(services, write, read))
    # The followers are closed by the daemon before uvicorn waits for open answers.
    member_logs, app.state.log_followers = build_member_logs_router(services, write, container_logs)
    app.include_router(member_logs)
    app.include_router(build_member_actions_router(services, write))
    page, app.state.status_feed = build_page_router(services, read)  # closed by the daemon at shutdown
    app.include_router(page)
    app.include_router(
        build_config_router(services, write, load_config or (lambda: load(services.settings.config)))
    )
    hot = _include_data_paths(app, services, write, read) if services.router is not None else []
    install_openapi(app, read, data_paths=services.router is not None)
    app.state.services = services
    app.state.mcp = mcp  # started by the first /mcp request
    app.front_door = FrontDoor(
        app.behind_front_door,
        hot_routes(hot) | {(method, MCP_PATH): mcp for method in ("GET", "POST", "DELETE")},
        write,
        BodyLimits(control=settings.max_body_bytes, data=settings.max_gateway_body_bytes),
        access_log=settings.log_requests,
        gate=gate,
    )
    app.state.gate = gate
    return app


def _include_data_paths(
    app: FastAPI, services: Services, write: Callable[..., None], read: Callable[..., None]
) -> list[BaseRoute]:
    """``/slices``, the tools and the gateway, for a daemon with a router; the routes of the
    last two are the front door's hot paths (their modules are loaded only here)."""
    from stackd.api.gateway import build_gateway_router
    from stackd.api.slices import build_slices_router
    from stackd.api.tools import build_tools_router
    from stackd.gpu.calls import CallLeases

    assert services.router is not None
    app.include_router(build_slices_router(services, write, read))
    holds = CallLeases(services.leases)
    hot: list[BaseRoute] = []
    for data_path in (
        build_tools_router(services.router, write, services.slices, holds, services.day),
        build_gateway_router(services.router, write, services.slices, holds, services.day),
    ):
        app.include_router(data_path)
        hot += data_path.routes
    return hot


def _scraped(
    registry: CollectorRegistry | Callable[[], CollectorRegistry] | None, gate: Gate
) -> Callable[[], CollectorRegistry]:
    """The registry ``/metrics`` reads, with each key's metrics, made once: a given one at once,
    one from a function at the first scrape, the process-wide default when none."""
    made: list[CollectorRegistry] = []

    def get() -> CollectorRegistry:
        if not made:
            if registry is None:
                return _default_registry()  # shared by every app of the process: no key collector
            made.append(registry() if callable(registry) else registry)
            if gate.meter is not None:
                from stackd.api.key_metrics import KeyCollector

                made[0].register(KeyCollector(gate.keyring, gate.meter))
        return made[0]

    if registry is not None and not callable(registry):
        get()  # a registry the caller holds has its collectors from the start
    return get


def build_gate(services: Services) -> Gate:
    """The keyring (bootstrap token, the config's gateway token, the key table), the per-key
    limits seeded from what the keys spent today, and the audit trail."""
    env = services.config.auth.gateway_token_env
    keyring = Keyring(services.keys, services.token, time.time, os.environ.get(env) if env else None)
    seed = services.keys.spend_since(*KeyMeter.seed_window(time.time())) if services.keys else None
    meter = KeyMeter(time.time, seed)
    usage = services.usage
    claim = None
    if isinstance(usage, KeyedUsageStore):
        usage.on_call(meter.add)
        claim = usage.claim
    return Gate(keyring, services.settings.loopback, meter, services.audit, claim)


def _default_registry() -> CollectorRegistry:
    from prometheus_client import REGISTRY

    return REGISTRY


@asynccontextmanager
async def _no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


def _serving(mcp: McpServer, lifespan: Lifespan) -> Lifespan:
    """``lifespan``, with the MCP session manager running inside it (stopped first)."""

    @asynccontextmanager
    async def serving(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app), mcp.running():
            yield

    return serving
