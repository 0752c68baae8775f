"""The host PIDs of a docker member's processes, so that NVML's per-process memory maps to it.

NVML reports host PIDs; ``docker top`` lists the container's processes with their host PIDs
(the engine's own PID namespace is not the host's). One call per measurement, after a member
became ready, never on a request's path. Docker's exceptions become ``DriverUnavailable`` /
``DriverFailed`` here, as in ``stackd.drivers.docker``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from stackd.config.models import Model
from stackd.drivers.docker_engine import from_env, refused, unreachable
from stackd.errors import DriverFailed, DriverUnavailable

if TYPE_CHECKING:
    from docker import DockerClient


class DockerPids:
    """``await pids(name, model)``: the host PIDs in the member's container, ``()`` when it does not run."""

    def __init__(self, client_factory: Callable[[], DockerClient] = from_env) -> None:
        self._client_factory = client_factory
        self._client: DockerClient | None = None

    async def __call__(self, name: str, model: Model) -> tuple[int, ...]:
        if model.docker is None:
            return ()
        container = model.docker.container
        try:
            return await asyncio.to_thread(self._top, container)
        except Exception as exc:
            if refused(exc):
                raise DriverFailed(f"Docker refused to list the processes of '{container}': {exc}") from exc
            if not unreachable(exc):
                raise
            self._client = None
            raise DriverUnavailable(f"Docker engine not reachable to list '{container}': {exc}") from exc

    def _top(self, container: str) -> tuple[int, ...]:
        if self._client is None:
            self._client = self._client_factory()
        from docker.errors import NotFound  # loaded with the client

        try:
            found = self._client.containers.get(container)
        except NotFound:
            return ()
        if found.status != "running":
            return ()
        return host_pids(found.top())


def host_pids(top: Mapping[str, object]) -> tuple[int, ...]:
    """The PID column of a ``docker top`` answer (``{"Titles": [...], "Processes": [[...]]}``)."""
    titles = top.get("Titles")
    titles = list(titles) if isinstance(titles, list) else []
    column = titles.index("PID") if "PID" in titles else 1
    rows = top.get("Processes")
    rows = rows if isinstance(rows, list) else []
    return tuple(int(row[column]) for row in rows if len(row) > column and str(row[column]).isdigit())
