"""Build the daemon's services from settings, and run it under uvicorn.

Everything is constructed here, once, and passed down (STYLE habit 9). The lifespan recovers an
interrupted switch (or restores the persisted stack) before the first request is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI

from stackd.api.app import create_app
from stackd.api.auth import TOKEN_ENV, load_or_create_token
from stackd.config.loader import load_config
from stackd.config.models import StacksConfig
from stackd.config.secrets import Secrets
from stackd.drivers.base import ContainerDriver, HealthChecker
from stackd.drivers.docker_logs import DockerLogs
from stackd.errors import StackdError
from stackd.hardware.probe import make_gpu_reader, read_hardware
from stackd.hardware.types import HardwareSnapshot
from stackd.logs import records as log_records
from stackd.roles import LiveEndpoints, LiveRoles
from stackd.services import Services
from stackd.settings import Settings
from stackd.state.permissions import private_database, private_state_dir

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from stackd.drivers.process import LocalProcessDriver
    from stackd.gpu.grant import FootprintMeter
    from stackd.manager import ModelStackManager
    from stackd.manager.seams import Drivers
    from stackd.router import ReasonRouter
    from stackd.state.gpu import GpuJournal
    from stackd.state.usage import UsageStore

log = logging.getLogger("stackd")

# Between a role swap and stopping the backends it replaced: a client that read /roles (or a
# gateway request that took its snapshot) just before the swap still reaches the old backend.
ROLE_DRAIN_S = Settings.model_fields["role_drain_s"].default

# CPython's cyclic collector walks every object of the generations it collects. A full collection
# of the daemon's start-up heap (FastAPI, pydantic's schemas, the config) takes tens of
# milliseconds on 2 cores and, under load, ran every few seconds: the gateway's p99 at 16
# connections was 38 ms, and 7-9 ms with the collector off (issue 13). Frozen, that heap is never
# walked again; the first threshold is raised so that the objects of requests in flight are
# rarely caught young and promoted (the hot path makes no cycles: reference counting frees them).
GC_THRESHOLDS = (10_000, 20, 100)
# What /healthz need not wait for runs this long after the lifespan's start, once the daemon
# serves (``_once_serving``): the periodic jobs' scheduler (apscheduler's import scans every
# installed package's entry points, ~0.1 s) and the heap's full collection (40-70 ms).
ONCE_SERVING_AFTER_S = 1.0


class UnsafeBind(StackdError):
    """Refusing to listen beyond loopback without an explicit token."""


def load_daemon_config(settings: Settings) -> StacksConfig:
    """The config file with the command line's overrides applied (``--gpu-total-gb``)."""
    config = load_config(settings.config)
    if settings.gpu_total_gb is not None:
        config = config.model_copy(
            update={"gpu": config.gpu.model_copy(update={"total_gb": settings.gpu_total_gb})}
        )
    return config


def refuse_unsafe_bind(settings: Settings, env: dict[str, str] | None = None) -> None:
    """Raise ``UnsafeBind`` for a non-loopback host without ``STACKD_TOKEN``. The daemon asks
    before it writes anything: a refused start leaves no token file, no lock file, no database."""
    env = dict(os.environ) if env is None else env
    if not settings.loopback and not env.get(TOKEN_ENV):
        raise UnsafeBind(
            f"refusing to listen on {settings.host} without a token: set {TOKEN_ENV} to a long random "
            "secret (every endpoint but /healthz will then require it), or bind to 127.0.0.1"
        )


def secret_env_names(config: StacksConfig) -> frozenset[str]:
    """Variables an engine process is not given: stackd's tokens and every cloud key the config
    names (a local engine needs none of them; one it does need goes in its process.env)."""
    names = {
        TOKEN_ENV,
        *(
            m.remote.api_key_env
            for m in config.models.values()
            if m.remote is not None and m.remote.api_key_env
        ),
    }
    if config.auth.gateway_token_env:
        names.add(config.auth.gateway_token_env)
    return frozenset(names)


@dataclass(frozen=True)
class _Base:
    """What every part of the daemon is built on: its settings, the live role and endpoint tables,
    the hardware reader and the token."""

    settings: Settings
    roles: LiveRoles
    endpoints: LiveEndpoints
    hardware: Callable[[], HardwareSnapshot]
    token: str
    token_source: str


@dataclass(frozen=True)
class _Engines:
    """What runs the members, built before the manager: its drivers, and the parts of them that
    the lease coordinator and the router share."""

    drivers: Drivers
    processes: LocalProcessDriver
    meter: FootprintMeter
    secrets: Secrets


def build_services(settings: Settings) -> Services:
    from stackd.manager import ModelStackManager
    from stackd.manager.seams import ManagerOptions
    from stackd.planner.footprints import remembered_footprints
    from stackd.state.gpu import GpuJournal
    from stackd.state.store import StateStore

    config = load_daemon_config(settings)
    refuse_unsafe_bind(settings)
    private_state_dir(settings.state_dir)
    token, source = load_or_create_token(settings.state_dir)
    private_database(settings.db_path)
    reader = make_gpu_reader(
        str(settings.gpu_scenario) if settings.gpu_scenario else None, settings.gpu_total_gb
    )

    def hardware() -> HardwareSnapshot:
        return read_hardware(reader)

    base = _Base(settings, LiveRoles(), LiveEndpoints(), hardware, token, source)
    store = StateStore(settings.db_path)
    gpu_journal = GpuJournal(settings.db_path)  # leases and measured footprints
    engines = _build_engines(base, config, gpu_journal)
    options = ManagerOptions(
        drain_s=settings.role_drain_s,
        footprints=lambda config: remembered_footprints(config, gpu_journal.footprints()),
        on_started=engines.meter.measure_later,
    )
    manager = ModelStackManager(config, store, engines.drivers, base.roles, hardware, options)
    return _serving_services(base, manager, engines, gpu_journal)


def _build_engines(base: _Base, config: StacksConfig, gpu_journal: GpuJournal) -> _Engines:
    from stackd.drivers.docker import DockerContainerDriver
    from stackd.drivers.docker_pids import DockerPids
    from stackd.drivers.health import HttpHealthChecker
    from stackd.drivers.ollama import OllamaHttpDriver
    from stackd.drivers.process import LocalProcessDriver
    from stackd.drivers.remote import HttpRemoteProber
    from stackd.gpu.grant import FootprintMeter
    from stackd.manager.seams import Drivers
    from stackd.state.processes import ProcessTable

    settings, endpoints = base.settings, base.endpoints
    health = HttpHealthChecker(ollama_url=config.ollama.url, endpoints=endpoints)  # as the Ollama driver
    processes = LocalProcessDriver(
        settings.state_dir,
        ProcessTable(settings.db_path),
        endpoints,
        gpu_device=config.gpu.device,
        withheld_env=secret_env_names(config),
    )
    containers: ContainerDriver = DockerContainerDriver(gpu_device=config.gpu.device, health=health)
    checker: HealthChecker = health
    if config.cluster is not None:  # members with docker.swarm are Swarm services (docs/scale-out.md)
        from stackd.drivers.cluster import ClusterContainers, ClusterHealth
        from stackd.drivers.swarm import SwarmServiceDriver

        swarm = SwarmServiceDriver(config.cluster, endpoints, health)
        containers, checker = ClusterContainers(containers, swarm), ClusterHealth(swarm, health)
    # a member a switch or a lease started gets its footprint measured
    meter = FootprintMeter(gpu_journal, processes, base.hardware, container_pids=DockerPids())
    secrets = Secrets.environment()  # the remote members' keys: the prober and the router read them here
    prober = HttpRemoteProber(secrets=secrets)
    drivers = Drivers(containers, processes, OllamaHttpDriver(config.ollama.url), prober, checker)
    return _Engines(drivers, processes, meter, secrets)


def _serving_services(
    base: _Base, manager: ModelStackManager, engines: _Engines, gpu_journal: GpuJournal
) -> Services:
    """What serves calls around the manager: keys and usage, leases, the day policy, power, the
    router and its slices."""
    from stackd.gpu.leases import LeaseCoordinator
    from stackd.manager.day import DayDriver, lease_views
    from stackd.manager.energy import PowerSampler
    from stackd.router import ReasonRouter
    from stackd.router.slices import SliceRouter
    from stackd.state.audit import AuditLog
    from stackd.state.day_policy import DayPolicyStore
    from stackd.state.energy import EnergyStore
    from stackd.state.keys import KeyedUsageStore, KeyStore
    from stackd.state.slice_audit import SliceAudit

    settings = base.settings
    keys = KeyStore(settings.db_path)
    usage = KeyedUsageStore(settings.db_path, keys)  # the ledger's store; also each key's calls
    leases = LeaseCoordinator(manager, journal=gpu_journal, meter=engines.meter)
    day = DayDriver(manager, DayPolicyStore(settings.db_path), leases=lambda: lease_views(leases))
    power = PowerSampler(manager, EnergyStore(settings.db_path))
    router = ReasonRouter(
        manager.live_config,  # the daemon's one: the manager swaps it, the router follows
        base.roles,
        usage=usage,
        on_use=manager.touch,
        endpoints=base.endpoints,
        unavailable=manager.unavailable,
        engines=engines.processes,  # a call waits while a process member's engine restarts
        secrets=engines.secrets,
    )
    slices = SliceRouter(router)
    slices.attach(SliceAudit(settings.db_path), settings.state_dir, usage=usage)
    return Services(
        settings=settings, roles=base.roles, manager=manager, read_hardware=base.hardware,
        token=base.token, token_source=base.token_source, leases=leases, router=router,
        slices=slices, usage=usage, endpoints=base.endpoints, processes=engines.processes,
        day=day, power=power, keys=keys, audit=AuditLog(settings.db_path),
    )  # fmt: skip


def watch_sighup(services: Services, settings: Settings) -> None:
    """``systemctl reload stackd`` (SIGHUP) re-reads the config; a bad file is logged and ignored."""
    import asyncio
    import signal

    from stackd.api.config_routes import reload_config

    async def reload() -> None:
        try:
            await reload_config(services, lambda: load_daemon_config(settings))
        except StackdError as exc:
            log.error("config reload refused, keeping the running config: %s", exc.message)

    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()  # keep a reference until the reload ends

    def on_sighup() -> None:
        task = loop.create_task(reload())
        pending.add(task)
        task.add_done_callback(pending.discard)

    # Not on the main thread, or no signals (Windows): reload through POST /config/reload only.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, on_sighup)


def settle_heap(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Once start-up is done: collect its garbage, move what is left to the collector's permanent
    generation (``gc.freeze``: never examined again) and set the thresholds. Idempotent."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


async def _start(services: Services, router: ReasonRouter) -> None:
    """The lifespan's start: recover or restore the stack, start the router. /healthz answers
    once it is done (and not before: the first start's switch is part of it)."""
    settings = services.settings
    if settings.recover_on_start:
        await services.manager.recover()  # the manager logs what it did
    await router.start()
    watch_sighup(services, settings)


def _once_serving(services: Services, router: ReasonRouter) -> None:
    """``ONCE_SERVING_AFTER_S`` after the lifespan's start: the data path's HTTP client (aiohttp,
    ~0.1 s: imported now, the first call does not pay it), the timers (their first runs are an
    interval away anyway), then the settled heap, with their objects in it."""
    import aiohttp  # noqa: F401

    if services.settings.periodic:
        from stackd.manager.periodic import start_periodic

        services.periodic = start_periodic(
            services.manager,
            leased=services.leases.holds,
            on_healthy=router.probe_succeeded,
            extra_jobs={
                **(services.day.jobs() if services.day is not None else {}),
                **(services.power.jobs() if services.power is not None else {}),
            },
        )
    settle_heap()


async def _shut_down(services: Services, router: ReasonRouter, usage: UsageStore) -> None:
    """Whatever failed, in start-up or since: the engines are stackd's children, and none may
    outlive it (a SIGKILLed daemon's engines are adopted by the next start instead)."""
    try:
        if services.periodic is not None:
            services.periodic.shutdown(wait=False)
        if services.slices is not None:
            await services.slices.aclose()
        await router.aclose()
        await services.leases.aclose()
        await usage.aclose()
        if services.keys is not None:
            services.keys.close()
        if services.audit is not None:
            services.audit.close()
        await services.manager.aclose()
    finally:
        if services.processes is not None:
            await services.processes.aclose()


def build_app(settings: Settings) -> FastAPI:
    services = build_services(settings)
    router, usage = services.router, services.usage
    assert router is not None and usage is not None  # build_services sets them

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        later: asyncio.TimerHandle | None = None
        try:
            await _start(services, router)
            loop = asyncio.get_running_loop()
            later = loop.call_later(ONCE_SERVING_AFTER_S, _once_serving, services, router)
            yield
        finally:
            if later is not None:
                later.cancel()
            await _shut_down(services, router, usage)

    def metrics_registry() -> CollectorRegistry:
        """Made at the first scrape of /metrics: a daemon nobody scrapes never loads prometheus_client."""
        from prometheus_client import CollectorRegistry

        from stackd.api.metrics import register_router_metrics, register_slice_metrics, register_stack_metrics

        registry = CollectorRegistry()
        register_router_metrics(registry, router)
        register_stack_metrics(registry, services)
        if services.slices is not None:
            register_slice_metrics(registry, services.slices)
        return registry

    return create_app(
        services,
        lifespan=lifespan,
        registry=metrics_registry,
        load_config=lambda: load_daemon_config(settings),
        container_logs=DockerLogs(),
    )


def env_secrets() -> list[str]:
    """The secrets known before the config is read: stackd's token and every *_KEY / *_TOKEN."""
    return [v for k, v in os.environ.items() if v and (k == TOKEN_ENV or k.endswith(("_KEY", "_TOKEN")))]


def daemon_secrets(services: Services) -> list[str]:
    """What no log line may show: the token (from wherever it was read), the configured API keys
    and the gateway's token, and what ``env_secrets`` found."""
    config = services.config
    names = {m.remote.api_key_env for m in config.models.values() if m.remote and m.remote.api_key_env}
    names.add(config.auth.gateway_token_env or "")
    return [services.token, *env_secrets(), *(os.environ.get(n, "") for n in names if n)]


def run(settings: Settings) -> None:
    from stackd.api.http_server import DaemonServer, server_config
    from stackd.api.listener import bind_listener, listen_url
    from stackd.state.lock import DaemonRecord, lock_state_dir

    # Building the daemon only allocates: the collector would walk the growing heap ~170 times
    # for nothing (80-150 ms of CPU before /healthz, measured with gc.callbacks). It is on again
    # once the app is built; settle_heap collects what the start left, once.
    gc.disable()
    # Lock the state dir and bind the port before the database is opened or an engine touched: a
    # second daemon is refused here having changed nothing (StateDirLocked, PortInUse: one line).
    # A public bind without a token is refused before even that: it writes nothing at all.
    refuse_unsafe_bind(settings)
    private_state_dir(settings.state_dir)
    url = listen_url(settings.host, settings.port)
    with lock_state_dir(settings.state_dir) as lock, bind_listener(settings.host, settings.port) as sock:
        lock.record(DaemonRecord(pid=os.getpid(), url=url))
        # JSON lines unless stderr is a terminal (stackd.logs.records); the token and the keys
        # masked in every line once they are known
        log_records.configure(secrets=env_secrets(), log_content=settings.log_content)
        # A bad config raises ConfigError here, listing every problem; the CLI prints it, no traceback.
        app = build_app(settings)
        log_records.configure(secrets=daemon_secrets(app.state.services), log_content=settings.log_content)
        gc.enable()
        log.info("stackd on %s (config %s, state %s)", url, settings.config, settings.state_dir)
        # A request deadline, keep-alive timeout and connection cap: idle or slow clients cannot
        # take every file descriptor (stackd.api.http_server).
        # Endless answers (the status page's event streams) are closed before uvicorn waits for them.
        server = DaemonServer(
            server_config(app, log_level="info", access_log=False, log_config=None),
            closers=[app.state.status_feed.close, app.state.log_followers.close],
        )
        server.run(sockets=[sock])
