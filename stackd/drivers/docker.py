"""The Docker engine behind the ``ContainerDriver`` contract, through the docker SDK.

Seams and invariants:

- The SDK is synchronous, so every engine call runs in a worker thread (``asyncio.to_thread``);
  the waits between readiness polls are ``await``-ed on the loop with an injected clock and sleep.
- Only the container named by ``model.docker.container`` is ever looked up, created, started or
  stopped; a container of another name is never touched, whatever its labels. A name lookup that
  Docker resolves to an ID prefix of another container counts as "missing".
- Containers created from ``docker.spec`` carry the labels ``stackd.managed=true``,
  ``stackd.model=<config key>`` and ``stackd.spec=<digest of the spec>``. A stopped managed
  container whose spec digest differs from the config is re-created, so an edited spec takes
  effect on the next start; a running one is left alone (no surprise restart).
- Host ports bind to 127.0.0.1 only. A GPU spec gets one device request for the configured GPU.
- Ready means Docker's HEALTHCHECK says ``healthy`` when the container has one, else the
  ``HealthChecker`` passes. A container that exits while starting fails at once, with its last
  log lines; one that is not ready by the start timeout fails with the last reason and logs.
- Errors: engine unreachable → ``DriverUnavailable`` naming DOCKER_HOST and its value; anything
  the engine refuses (image missing, port taken, no GPU runtime) → ``DriverFailed``.
- The SDK is imported with the first client (``docker_engine.from_env``), after a plain check
  that the engine's socket answers: a daemon on a machine without Docker never loads it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from stackd.config.models import DockerRuntime, HealthCheck, Model
from stackd.drivers.base import HealthChecker
from stackd.drivers.docker_engine import from_env, refused, unreachable
from stackd.drivers.docker_spec import MANAGED_LABEL, SPEC_LABEL, create_options, spec_digest
from stackd.drivers.health import HttpHealthChecker
from stackd.errors import DriverFailed, DriverUnavailable, StackdError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

DEFAULT_START_TIMEOUT_S = HealthCheck.model_validate({}).start_timeout_s
FIRST_POLL_S = 0.1
MAX_POLL_S = 1.0
LOG_TAIL_LINES = 20
STOPPABLE = frozenset({"running", "restarting", "paused"})

T = TypeVar("T")
P = ParamSpec("P")
ClientFactory = Callable[[], "DockerClient"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ContainerState:
    """What one inspect says. ``health`` is None when the container has no HEALTHCHECK."""

    status: str
    exit_code: int | None = None
    health: str | None = None
    health_output: str | None = None


class DockerContainerDriver:
    """``ContainerDriver`` over a real Docker engine. The client is made lazily, in a worker thread,
    and made again after the engine was unreachable (it may have been restarted)."""

    def __init__(
        self,
        client_factory: ClientFactory = from_env,
        gpu_device: int = 0,
        health: HealthChecker | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        default_start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        self._client_factory = client_factory
        self._client: DockerClient | None = None
        self._gpu_device = gpu_device
        self._health: HealthChecker = health if health is not None else HttpHealthChecker()
        self._clock = clock
        self._sleep = sleep
        self._default_start_timeout_s = default_start_timeout_s

    async def running(self, models: Mapping[str, Model]) -> frozenset[str]:
        wanted = {m.docker.container: name for name, m in models.items() if m.docker is not None}
        if not wanted:
            return frozenset()
        names = await self._call("list containers", self._running_names)
        return frozenset(name for container, name in wanted.items() if container in names)

    async def ensure_running(self, name: str, model: Model) -> None:
        runtime = _runtime(name, model)
        await self._call(f"start container '{runtime.container}'", self._start, name, model, runtime)
        await self._wait_ready(name, model, runtime)

    async def ensure_stopped(self, name: str, model: Model) -> None:
        runtime = _runtime(name, model)
        await self._call(f"stop container '{runtime.container}'", self._stop, runtime)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def _wait_ready(self, name: str, model: Model, runtime: DockerRuntime) -> None:
        timeout_s = model.health.start_timeout_s if model.health else self._default_start_timeout_s
        deadline = self._clock() + timeout_s
        delay = FIRST_POLL_S
        container = runtime.container
        while True:
            state = await self._call(f"inspect container '{container}'", self._state, container)
            if state.status in ("exited", "dead", "missing"):
                logs = await self._logs(container)
                raise DriverFailed(
                    f"container '{container}' of model '{name}' {_ended(state)} while starting{logs}",
                    model=name,
                    container=container,
                )
            reason = await self._not_ready_reason(name, model, state)
            if reason is None:
                return
            if self._clock() >= deadline:
                logs = await self._logs(container)
                raise DriverFailed(
                    f"container '{container}' of model '{name}' was not ready within {timeout_s:g} s: "
                    f"{reason}{logs}",
                    model=name,
                    container=container,
                )
            await self._sleep(max(0.0, min(delay, deadline - self._clock())))
            delay = min(delay * 1.5, MAX_POLL_S)

    async def _not_ready_reason(self, name: str, model: Model, state: ContainerState) -> str | None:
        """None when ready, else why not (the reason a timeout reports)."""
        if state.status != "running":
            return f"its status is {state.status}"
        if state.health is not None:
            if state.health == "healthy":
                return None
            output = f" (last check: {state.health_output.strip()})" if state.health_output else ""
            return f"Docker health status is {state.health}{output}"
        try:
            await self._health.check(name, model)
        except DriverUnavailable as exc:
            return exc.message
        return None

    async def _logs(self, container: str) -> str:
        """The container's last log lines as a suffix for an error message ("" if none)."""
        try:
            text = await self._call(f"read logs of '{container}'", self._tail_logs, container)
        except StackdError:
            return ""
        return f"; last log lines:\n{text}" if text else ""

    # ---- synchronous engine calls (worker thread only)

    def _docker(self) -> DockerClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _find(self, container: str) -> Container | None:
        client = self._docker()  # first: no engine raises NoEngine before the SDK is imported
        from docker.errors import NotFound  # loaded with the client

        try:
            found = client.containers.get(container)
        except NotFound:
            return None
        return found if found.name == container else None

    def _running_names(self) -> set[str]:
        listed = self._docker().api.containers(filters={"status": "running"})
        return {n.lstrip("/") for c in listed for n in c.get("Names") or []}

    def _start(self, name: str, model: Model, runtime: DockerRuntime) -> None:
        found = self._find(runtime.container)
        if found is not None and runtime.spec is not None and found.status not in STOPPABLE:
            labels = found.labels
            digest = spec_digest(runtime.spec, self._gpu_device)
            if labels.get(MANAGED_LABEL) == "true" and labels.get(SPEC_LABEL) != digest:
                found.remove()
                found = None
        container = found if found is not None else self._create(name, model, runtime)
        if container.status == "paused":
            container.unpause()
        elif container.status not in ("running", "restarting"):
            container.start()

    def _create(self, name: str, model: Model, runtime: DockerRuntime) -> Container:
        if runtime.spec is None:
            raise DriverFailed(
                f"container '{runtime.container}' of model '{name}' does not exist and the config gives no "
                "docker.spec to create it; create the container or add a spec",
                model=name,
                container=runtime.container,
            )
        client = self._docker()
        from docker.errors import ImageNotFound  # loaded with the client

        try:
            client.images.get(runtime.spec.image)
        except ImageNotFound as exc:
            raise DriverFailed(
                f"image '{runtime.spec.image}' not found locally; build or pull it "
                f"(model '{name}', container '{runtime.container}')",
                model=name,
                container=runtime.container,
                image=runtime.spec.image,
            ) from exc
        return client.containers.create(**create_options(name, runtime, model.health, self._gpu_device))

    def _stop(self, runtime: DockerRuntime) -> None:
        found = self._find(runtime.container)
        if found is not None and found.status in STOPPABLE:
            found.stop(timeout=runtime.stop_timeout_s)

    def _state(self, container: str) -> ContainerState:
        found = self._find(container)
        if found is None:
            return ContainerState(status="missing")
        state = found.attrs.get("State") or {}
        health = state.get("Health")
        checks = (health or {}).get("Log") or []
        return ContainerState(
            status=state.get("Status", "unknown"),
            exit_code=state.get("ExitCode"),
            health=health.get("Status") if health else None,
            health_output=checks[-1].get("Output") if checks else None,
        )

    def _tail_logs(self, container: str) -> str:
        found = self._find(container)
        raw: bytes = found.logs(tail=LOG_TAIL_LINES) if found is not None else b""
        return raw.decode("utf-8", errors="replace").rstrip()

    # ---- error translation

    async def _call(self, action: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StackdError:
            raise
        except Exception as exc:
            if refused(exc):
                raise DriverFailed(
                    f"Docker refused to {action}: {getattr(exc, 'explanation', None) or exc}"
                ) from exc
            if not unreachable(exc):
                raise
            # The engine is down or was restarted: make a new client next time.
            self._client = None
            raise DriverUnavailable(
                f"Docker engine not reachable at {_docker_host()}: {_root_reason(exc)}; "
                "start dockerd (scripts/dockerd-test start) or set DOCKER_HOST",
                docker_host=os.environ.get("DOCKER_HOST"),
            ) from exc


def _runtime(name: str, model: Model) -> DockerRuntime:
    if model.docker is None:
        raise DriverFailed(f"model '{name}' has no docker section; the Docker driver cannot run it")
    if model.docker.swarm is not None:  # a reload added docker.swarm: never run it here instead
        raise DriverFailed(
            f"model '{name}' is a swarm member but the daemon started without a cluster: section; "
            "restart the daemon to run it on the cluster (docs/scale-out.md)",
            model=name,
        )
    return model.docker


def _ended(state: ContainerState) -> str:
    return "disappeared" if state.status == "missing" else f"exited with code {state.exit_code}"


def _docker_host() -> str:
    host = os.environ.get("DOCKER_HOST")
    return f"{host} (DOCKER_HOST)" if host else "unix:///var/run/docker.sock (DOCKER_HOST is unset)"


def _root_reason(exc: BaseException) -> str:
    """The OS error under the SDK's wrappers ("No such file or directory"), else the first line."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        pending.extend(a for a in current.args if isinstance(a, BaseException))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
    return first_line[:200]
