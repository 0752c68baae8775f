"""The contracts between the manager and the engines it drives.

Every method is async, idempotent where its name says ``ensure_``, and translates its engine's
exceptions into ``DriverUnavailable`` (engine unreachable: the message names DOCKER_HOST or the
URL) or ``DriverFailed`` (engine answered but the action failed: image missing, unhealthy,
pull failed). Nothing else escapes. Real drivers, simulators' clients and in-memory fakes all
satisfy these protocols; the manager never knows which it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from stackd.config.models import Model, OllamaRuntime


@dataclass(frozen=True)
class PullProgress:
    """One line of Ollama's pull stream: ``completed``/``total`` bytes of layer ``digest``."""

    tag: str
    status: str
    digest: str | None = None
    completed: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class LoadedModel:
    """One entry of Ollama's ``/api/ps``. ``size_vram == 0`` means fully on the CPU."""

    tag: str
    size: int
    size_vram: int
    expires_at: str | None = None


class ContainerDriver(Protocol):
    async def running(self, models: Mapping[str, Model]) -> frozenset[str]:
        """Names (config keys) of the given docker models whose container is running."""
        ...

    async def ensure_running(self, name: str, model: Model) -> None:
        """Create the container if missing and a spec is given, start it, wait until ready.

        Ready means Docker's HEALTHCHECK reports healthy, or, without one, the model's health
        endpoint answers 2xx. Gives up after ``model.health.start_timeout_s``. Idempotent.
        """
        ...

    async def ensure_stopped(self, name: str, model: Model) -> None:
        """Stop the container with its grace timeout. A missing or stopped container is fine."""
        ...


@dataclass(frozen=True)
class ProcessInfo:
    """What the process driver knows of one member's engine, for status and metrics.

    ``state``: stopped, starting, ready, stopping, exited (died; no restart), restarting,
    failed. ``pids`` is the engine's process tree (NVML per-process memory is mapped through it);
    ``log_tail`` is filled when the member died or failed."""

    model: str
    state: str
    pid: int | None
    port: int | None
    endpoint: str | None
    started_at: float | None
    restarts: int
    exits: int
    last_exit: str | None
    log_path: str | None
    log_tail: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    rss_mib: int | None = None
    ready_at: float | None = None  # when the current engine first answered its health path (epoch s)


EnginePhase = Literal["serving", "waiting", "down"]


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """Whether a process member's engine can take a call now, as the router asks it.

    ``serving``: it answers. ``waiting``: it is starting or restarting (a crash and the restart
    policy) and will answer unless that fails. ``down``: it will not answer until a switch starts
    it (stopped, restart policy never, or the restart limit reached). ``reason`` says what is
    happening in words a caller can act on ("engine smollm2-135m killed by SIGKILL, restart 1/3
    in progress"); ``generation`` is a new number for each engine started, so a caller can tell
    a restarted engine from the one it saw fail."""

    phase: EnginePhase
    reason: str
    generation: int


class EngineReadiness(Protocol):
    """The one owner of each engine's readiness (the process driver), asked by the router."""

    def engine_status(self, model: str) -> EngineStatus | None:
        """The engine of ``model`` now; None when no engine of that name was ever started or
        adopted. No I/O, never blocks, never raises."""
        ...

    async def wait_serving(self, model: str, timeout_s: float) -> EngineStatus | None:
        """Return as soon as the engine serves or is down, or after ``timeout_s``: its status
        then. An engine that says it serves but has just died (its exit not handled yet) is
        waited for like a restarting one. Never raises."""
        ...


class ProcessDriver(Protocol):
    """Local engine processes (``runtime: process``). Same verbs as ``ContainerDriver``."""

    async def running(self, models: Mapping[str, Model]) -> frozenset[str]:
        """Names of the given process models whose engine process lives (adopting, at the first
        call, the engines an earlier run of stackd left)."""
        ...

    async def ensure_running(self, name: str, model: Model) -> None:
        """Spawn the engine unless it runs, then wait until its health path answers 2xx (within
        the start timeout). Idempotent. ``DriverFailed`` with the log tail when it cannot."""
        ...

    async def ensure_stopped(self, name: str, model: Model) -> None:
        """SIGTERM the group, SIGKILL after the grace; returns when none of it is left. Idempotent."""
        ...

    def processes(self) -> list[ProcessInfo]:
        """Every member the driver has seen, with its engine's PIDs and memory. No I/O but /proc."""
        ...

    def log_tail(self, name: str, lines: int = 20) -> list[str]:
        """The last lines the member's engine wrote in its current (or last) run."""
        ...


class OllamaDriver(Protocol):
    async def list_tags(self) -> frozenset[str]:
        """Tags present locally (``/api/tags``)."""
        ...

    async def loaded(self) -> list[LoadedModel]:
        """What Ollama has loaded now and where (``/api/ps``)."""
        ...

    def pull(self, tag: str) -> AsyncIterator[PullProgress]:
        """Pull ``tag``, yielding progress; raises ``DriverFailed`` if the pull fails part-way."""
        ...

    async def load(self, runtime: OllamaRuntime) -> None:
        """Load with the configured options and keep_alive; returns once loaded."""
        ...

    async def unload(self, runtime: OllamaRuntime) -> None:
        """Unload now (``keep_alive: 0``). Unloading a model that is not loaded is fine."""
        ...


class RemoteProber(Protocol):
    async def probe(self, name: str, model: Model) -> None:
        """Check a remote answers without spending tokens; raises ``DriverUnavailable``."""
        ...


class HealthChecker(Protocol):
    async def check(self, name: str, model: Model) -> None:
        """One health probe of a member's endpoint; raises ``DriverUnavailable`` when unhealthy."""
        ...
