"""The drivers of a config with a ``cluster:`` section: members with ``docker.swarm`` go to the
Swarm driver, the others to the local engine, behind the same ``ContainerDriver`` and
``HealthChecker`` contracts (the manager never knows which it has)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from stackd.config.models import Model
from stackd.drivers.base import ContainerDriver, HealthChecker
from stackd.drivers.swarm_views import MemberView, NodeView
from stackd.errors import DriverUnavailable

if TYPE_CHECKING:  # the Swarm driver (and the docker SDK) only where a config has a cluster
    from stackd.drivers.swarm import SwarmServiceDriver


@runtime_checkable
class ClusterReader(Protocol):
    """A container driver that also runs members on a cluster (the manager's observation asks it)."""

    async def read_cluster(self, models: Mapping[str, Model]) -> tuple[list[NodeView], list[MemberView]]:
        """The nodes, and where each of ``models`` that runs on the cluster is; raises
        ``DriverUnavailable`` when the cluster's manager cannot be reached."""
        ...


class ClusterContainers:
    """The ``ContainerDriver`` of a config with a cluster: members with ``docker.swarm`` go to
    Swarm, the others to the local engine."""

    def __init__(self, local: ContainerDriver, swarm: SwarmServiceDriver) -> None:
        self.local = local
        self.swarm = swarm

    def _of(self, model: Model) -> ContainerDriver:
        return self.swarm if model.docker is not None and model.docker.swarm else self.local

    async def running(self, models: Mapping[str, Model]) -> frozenset[str]:
        clustered = {n: m for n, m in models.items() if m.docker is not None and m.docker.swarm}
        local = {n: m for n, m in models.items() if n not in clustered}
        found = await self.swarm.running(clustered) if clustered else frozenset()
        return found | (await self.local.running(local) if local else frozenset())

    async def ensure_running(self, name: str, model: Model) -> None:
        await self._of(model).ensure_running(name, model)

    async def read_cluster(self, models: Mapping[str, Model]) -> tuple[list[NodeView], list[MemberView]]:
        clustered = {n: m for n, m in models.items() if m.docker is not None and m.docker.swarm}
        return await self.swarm.nodes(), await self.swarm.views(clustered)

    async def ensure_stopped(self, name: str, model: Model) -> None:
        await self._of(model).ensure_stopped(name, model)


class ClusterHealth:
    """The ``HealthChecker`` of a config with a cluster: a swarm member is first looked up in
    Swarm (its endpoint follows a rescheduled task; a member whose node is down or whose task
    does not run is unhealthy with that reason), then probed over HTTP like any member."""

    def __init__(self, swarm: SwarmServiceDriver, http: HealthChecker) -> None:
        self._swarm = swarm
        self._http = http

    async def check(self, name: str, model: Model) -> None:
        if model.docker is not None and model.docker.swarm is not None:
            view = (await self._swarm.views({name: model}))[0]
            if view.degraded is not None:
                raise DriverUnavailable(view.degraded, model=name)
        await self._http.check(name, model)
