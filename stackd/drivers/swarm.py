"""Docker Swarm services behind the ``ContainerDriver`` contract (``cluster:`` + ``docker.swarm``).

A member is a replicated service named ``docker.container``, scaled between 0 and 1 by the same
StartContainer / StopContainer steps, undo, journal and recovery as a local container
(docs/scale-out.md). Seams and invariants:

- "Running" is Swarm's desired state: a service scaled to 1. Swarm, not stackd, keeps a task of
  it alive (it reschedules one whose node is lost); ``views`` says where it runs and how.
- ``ensure_running`` creates the service (or re-creates one at 0 replicas whose spec digest
  changed), scales it to 1 and waits for a task that runs and answers its health check at its
  node's address and published port, which it records in ``LiveEndpoints`` for the router.
  A task Swarm cannot place fails the start with Swarm's own reason once it has pended for
  ``swarm.pending_s`` ("no suitable node (insufficient resources on 3 nodes)"); a task the node
  rejects or that fails fails at once with its error. Never a bare timeout.
- ``ensure_stopped`` scales to 0 and returns only when every task's container is gone: the
  GPU of the node is free only then (the handover rule). A task on a node that is down cannot
  report and counts as gone.
- The SDK is synchronous: every engine call runs in a worker thread. ``Service.scale`` sends a
  cached version (500 "update out of sequence" on a second call): the spec is read just before
  each update. Engine errors are translated in ``_call`` only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from stackd.config.cluster import ClusterConfig
from stackd.config.models import HealthCheck, Model
from stackd.drivers.base import HealthChecker
from stackd.drivers.docker_spec import MANAGED_LABEL, SPEC_LABEL
from stackd.drivers.swarm_spec import (
    TaskView,
    gpus_of,
    member_endpoint,
    read_task,
    service_options,
)
from stackd.drivers.swarm_views import MemberView, NodeView, read_node
from stackd.errors import DriverFailed, DriverUnavailable, StackdError
from stackd.roles import LiveEndpoints

DEFAULT_START_TIMEOUT_S = HealthCheck.model_validate({}).start_timeout_s
POLL_S = 0.1  # reads of the manager's local state: cheap, and Swarm's own steps take 0.5-1.3 s
STOP_MARGIN_S = 15.0  # on top of the stop grace: Swarm's own bookkeeping of a task that exited

T = TypeVar("T")
P = ParamSpec("P")
ClientFactory = Callable[[], docker.DockerClient]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def _new_failure(
    view: MemberView, old_failures: frozenset[str], name: str, service: str
) -> DriverFailed | None:
    """The start's failure when a task of this start (not one from before it) was rejected by its
    node or failed and none runs: Swarm's verb, the node and the task's error."""
    task = view.task
    failed = [t for t in view.failed if t.id not in old_failures]
    if not failed or (task is not None and task.state == "running"):
        return None
    node = view.nodes.get(failed[-1].node_id or "")
    where = f" on node {node.hostname}" if node is not None else ""
    return DriverFailed(
        f"Swarm {failed[-1].state} the task of service '{service}' (model '{name}'){where}: {failed[-1].error}",
        model=name,
        container=service,
    )


def _task_reason(task: TaskView) -> str:
    """Why a task that does not run yet is not ready, in Swarm's words."""
    return f"task is {task.state}" + (f" ({task.error or task.message})" if task.message else "")


class SwarmServiceDriver:
    """``ContainerDriver`` over a Swarm manager. Only services named by ``docker.container`` are touched."""

    def __init__(
        self,
        cluster: ClusterConfig,
        endpoints: LiveEndpoints,
        health: HealthChecker,
        client_factory: ClientFactory | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._cluster = cluster
        self._endpoints = endpoints
        self._health = health
        self._client_factory = client_factory or (
            lambda: docker.DockerClient(base_url=cluster.docker_host, version="auto", timeout=30)
        )
        self._client: docker.DockerClient | None = None
        self._clock = clock
        self._sleep = sleep

    async def running(self, models: Mapping[str, Model]) -> frozenset[str]:
        wanted = {m.docker.container: n for n, m in models.items() if m.docker is not None and m.docker.swarm}
        if not wanted:
            return frozenset()
        replicas = await self._call("list services", self._replicas)
        return frozenset(name for service, name in wanted.items() if replicas.get(service, 0) >= 1)

    async def ensure_running(self, name: str, model: Model) -> None:
        service = _service(name, model)
        before = (await self._call(f"read service '{service}'", self._views, {name: model}))[0]
        await self._call(f"scale service '{service}' to 1", self._scale_up, name, model)
        await self._wait_running(name, model, service, frozenset(t.id for t in before.failed))

    async def ensure_stopped(self, name: str, model: Model) -> None:
        service = _service(name, model)
        assert model.docker is not None
        found = await self._call(f"scale service '{service}' to 0", self._scale, service, 0)
        self._endpoints.clear(name)
        if not found:
            return
        limit = model.docker.stop_timeout_s + STOP_MARGIN_S
        deadline = self._clock() + limit
        while True:
            left = await self._call(f"list tasks of '{service}'", self._live_tasks, service)
            if not left:
                return
            if self._clock() >= deadline:
                states = ", ".join(sorted({t.state for t in left}))
                raise DriverFailed(
                    f"service '{service}' of model '{name}' still has a task ({states}) {limit:g} s after "
                    "it was scaled to 0; its GPU is not free",
                    model=name,
                    container=service,
                )
            await self._sleep(POLL_S)

    async def nodes(self) -> list[NodeView]:
        return await self._call("list nodes", self._nodes)

    async def views(self, models: Mapping[str, Model]) -> list[MemberView]:
        """Every swarm member's service: replicas, newest task, its node and endpoint. Follows
        rescheduling: the endpoint of a member that runs is recorded in ``LiveEndpoints``."""
        wanted = {n: m for n, m in models.items() if m.docker is not None and m.docker.swarm}
        if not wanted:
            return []
        views = await self._call("read services", self._views, wanted)
        for view in views:
            if view.endpoint is not None and view.degraded is None:
                self._endpoints.set(view.model, view.endpoint)
        return views

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def _wait_running(
        self, name: str, model: Model, service: str, old_failures: frozenset[str]
    ) -> None:
        """Until a task runs and answers; a task of this start that the node rejects or that
        fails (not one from before it) fails the start at once with its error."""
        placement = model.docker.swarm if model.docker else None
        assert placement is not None
        timeout_s = model.health.start_timeout_s if model.health else DEFAULT_START_TIMEOUT_S
        start = self._clock()
        pending_since: float | None = None
        reason = "no task yet"
        while True:
            view = (await self._call(f"read service '{service}'", self._views, {name: model}))[0]
            task = view.task
            now = self._clock()
            failure = _new_failure(view, old_failures, name, service)
            if failure is not None:
                raise failure
            if task is not None and task.state == "pending" and task.error:
                pending_since = now if pending_since is None else pending_since
                if now - pending_since >= placement.pending_s:
                    raise await self._unplaceable(name, model, service, task.error)
            else:
                pending_since = None
            if task is not None and task.state == "running" and view.endpoint is not None:
                self._endpoints.set(name, view.endpoint)
                try:
                    await self._health.check(name, model)
                    return
                except DriverUnavailable as exc:
                    reason = exc.message
            elif task is not None:
                reason = _task_reason(task)
            if now - start >= timeout_s:
                raise DriverFailed(
                    f"service '{service}' of model '{name}' was not ready within {timeout_s:g} s: {reason}",
                    model=name,
                    container=service,
                )
            await self._sleep(POLL_S)

    async def _unplaceable(self, name: str, model: Model, service: str, error: str) -> DriverFailed:
        """The start's failure when Swarm has not placed its task for ``swarm.pending_s``: Swarm's
        reason, what the member wants and, when resources are short, the tasks holding GPUs."""
        holders = await self._call("list tasks", self._gpu_holders)
        held = f"; {'; '.join(holders)}" if holders and "insufficient resources" in error else ""
        return DriverFailed(
            f"Swarm cannot place service '{service}' (model '{name}'): {error}"
            f"{_wants(model, self._cluster)}{held}; free what holds it or change docker.swarm",
            model=name,
            container=service,
            swarm_error=error,
        )

    # ---- synchronous engine calls (worker thread only)

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _inspect(self, service: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._docker().api.inspect_service(service)
        except NotFound:
            return None
        return found if found.get("Spec", {}).get("Name") == service else None

    def _replicas(self) -> dict[str, int]:
        listed = self._docker().api.services(filters={"label": f"{MANAGED_LABEL}=true"})
        out: dict[str, int] = {}
        for raw in listed:
            spec = raw.get("Spec") or {}
            out[str(spec.get("Name"))] = int(
                ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
            )
        return out

    def _scale_up(self, name: str, model: Model) -> None:
        service = _service(name, model)
        options = service_options(name, model, self._cluster, replicas=1)
        found = self._inspect(service)
        if found is not None and _replicas_of(found) == 0:
            labels = found.get("Spec", {}).get("Labels") or {}
            if (
                labels.get(MANAGED_LABEL) == "true"
                and labels.get(SPEC_LABEL) != options["labels"][SPEC_LABEL]
            ):
                self._docker().api.remove_service(found["ID"])
                self._wait_removed(service)
                found = None
        if found is None:
            assert model.docker is not None
            if model.docker.spec is None:
                raise DriverFailed(
                    f"service '{service}' of model '{name}' does not exist and the config gives no "
                    "docker.spec to create it; add a spec",
                    model=name,
                    container=service,
                )
            self._docker().api.create_service(**options)
            return
        self._scale(service, 1)

    def _wait_removed(self, service: str) -> None:
        deadline = time.monotonic() + 10
        while self._inspect(service) is not None and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def _scale(self, service: str, replicas: int) -> bool:
        """Set the replicas from the spec as it is now (never a cached version); False if missing."""
        found = self._inspect(service)
        if found is None:
            return False
        if _replicas_of(found) != replicas:
            self._docker().api.update_service(
                found["ID"],
                version=found["Version"]["Index"],
                mode={"Replicated": {"Replicas": replicas}},
                fetch_current_spec=True,
            )
        return True

    def _tasks(self, service: str) -> list[TaskView]:
        return [read_task(t) for t in self._docker().api.tasks(filters={"service": service})]

    def _live_tasks(self, service: str) -> list[TaskView]:
        """Tasks whose container may still exist (and hold the node's GPU)."""
        down = {n.id for n in self._nodes() if not n.up}
        return [t for t in self._tasks(service) if not t.gone and t.node_id not in down]

    def _gpu_holders(self) -> list[str]:
        """'GPU-0 of node2 is held by service sw-gpu-a' for every GPU a live task has been given."""
        names = {
            str(s.get("ID")): str((s.get("Spec") or {}).get("Name")) for s in self._docker().api.services()
        }
        hosts = {n.id: n.hostname for n in self._nodes()}
        out = []
        for raw in self._docker().api.tasks(filters={"desired-state": "running"}):
            if read_task(raw).gone:
                continue
            for resource in raw.get("GenericResources") or []:
                spec = resource.get("NamedResourceSpec") or {}
                if spec.get("Kind") == self._cluster.gpu_resource:
                    host = hosts.get(str(raw.get("NodeID")), "?")
                    service = names.get(str(raw.get("ServiceID")), "?")
                    out.append(f"{spec.get('Value')} of {host} is held by service {service}")
        return sorted(out)

    def _nodes(self) -> list[NodeView]:
        return [read_node(raw, self._cluster.gpu_resource) for raw in self._docker().api.nodes()]

    def _views(self, models: Mapping[str, Model]) -> list[MemberView]:
        """Three engine calls whatever the number of members: nodes, services, tasks."""
        api = self._docker().api
        nodes = {n.id: n for n in self._nodes()}
        wanted = {_service(name, model) for name, model in models.items()}
        one = {"name": next(iter(wanted))} if len(wanted) == 1 else {}
        services = {str(s["Spec"]["Name"]): s for s in api.services(filters=one or None)}
        ids = {str(services[n]["ID"]): n for n in wanted if n in services}
        tasks: dict[str, list[TaskView]] = {n: [] for n in wanted}
        listed = (
            api.tasks(filters={"service": next(iter(ids))}) if len(ids) == 1 else api.tasks() if ids else []
        )
        for raw in listed:
            owner = ids.get(str(raw.get("ServiceID")))
            if owner is not None:
                tasks[owner].append(read_task(raw))
        out = []
        for name, model in models.items():
            service = _service(name, model)
            found = services.get(service)
            replicas = _replicas_of(found) if found is not None else 0
            every = tasks[service]
            task = max((t for t in every if t.desired == "running"), key=lambda t: t.created, default=None)
            node = nodes.get(task.node_id) if task is not None and task.node_id else None
            endpoint = member_endpoint(model, node.address) if node is not None and node.address else None
            placed = [t for t in every if t.node_id in nodes]
            last = max(placed, key=lambda t: t.created, default=None)
            lost = nodes[last.node_id] if last is not None and last.node_id else None
            lost_on = lost if lost is not None and not lost.up else None
            failed = tuple(
                sorted(
                    (t for t in every if t.state in ("failed", "rejected") and t.error),
                    key=lambda t: t.created,
                )
            )
            out.append(MemberView(name, service, replicas, task, node, endpoint, lost_on, failed, nodes))
        return out

    # ---- error translation

    async def _call(self, action: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StackdError:
            raise
        except APIError as exc:
            raise DriverFailed(f"Swarm refused to {action}: {exc.explanation or exc}") from exc
        except (DockerException, requests.exceptions.RequestException) as exc:
            self._client = None
            raise DriverUnavailable(
                f"Swarm manager not reachable at {self._cluster.docker_host} (cluster.docker_host): "
                f"{_first_line(exc)}; start its dockerd or fix cluster.docker_host",
                docker_host=self._cluster.docker_host,
            ) from exc


def _service(name: str, model: Model) -> str:
    if model.docker is None or model.docker.swarm is None:
        raise DriverFailed(f"model '{name}' has no docker.swarm section; the Swarm driver cannot run it")
    return model.docker.container


def _replicas_of(raw: dict[str, Any]) -> int:
    mode = (raw.get("Spec") or {}).get("Mode") or {}
    return int((mode.get("Replicated") or {}).get("Replicas", 0))


def _wants(model: Model, cluster: ClusterConfig) -> str:
    assert model.docker is not None and model.docker.swarm is not None
    parts = [f"{gpus_of(model, model.docker.swarm)} {cluster.gpu_resource}"]
    parts += model.docker.swarm.constraints
    return f" (it needs {', '.join(parts)})"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
