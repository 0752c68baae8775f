"""What stackd creates a Swarm service from, and what it reads back: pure functions, no engine.

``service_options`` gives the keyword arguments of the SDK's ``api.create_service`` for a member
with ``docker.swarm``: image, command (Swarm's Args, as ``docker run IMAGE CMD``), env, the
HEALTHCHECK, the stop grace (``docker.stop_timeout_s``: the GPU is free only once the container
has exited), placement constraints, GPUs as generic resources, ports published in host mode on
the node the task runs on, and the stackd labels (``stackd.managed``, ``stackd.model``,
``stackd.spec``). A service is created with the replicas it is asked for (0 or 1).

``member_endpoint`` moves the configured endpoint to the node's address and the published port;
``read_task`` turns the engine's task JSON into a ``TaskView``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from stackd.config.cluster import ClusterConfig, SwarmPlacement
from stackd.config.models import HealthCheck, Model
from stackd.config.models import Placement as ModelPlacement
from stackd.drivers.docker_spec import (
    HEALTHCHECK_INTERVAL_S,
    HEALTHCHECK_RETRIES,
    MANAGED_LABEL,
    MODEL_LABEL,
    NS_PER_S,
    SPEC_LABEL,
)

if TYPE_CHECKING:
    from docker.types import Healthcheck

# Task states after which the task's container no longer exists (docker/swarmkit api/types.proto).
GONE = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned", "remove"})
RESTART_DELAY_NS = NS_PER_S


@dataclass(frozen=True)
class TaskView:
    """One Swarm task of a member's service, as the manager reports it."""

    id: str
    state: str
    desired: str
    node_id: str | None
    message: str
    error: str | None
    created: str

    @property
    def gone(self) -> bool:
        return self.state in GONE


def gpus_of(model: Model, placement: SwarmPlacement) -> int:
    if placement.gpus is not None:
        return placement.gpus
    return 1 if model.placement == ModelPlacement.gpu else 0


def spec_digest(name: str, model: Model, cluster: ClusterConfig) -> str:
    """A short digest of everything a service is made from; a change means re-create."""
    docker = model.docker
    assert docker is not None
    text = "|".join(
        [
            docker.model_dump_json(),
            model.health.model_dump_json() if model.health else "",
            cluster.gpu_resource,
            name,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def service_options(name: str, model: Model, cluster: ClusterConfig, replicas: int) -> dict[str, Any]:
    """Keyword arguments of ``api.create_service`` for member ``name`` (docker.spec and swarm set)."""
    # The SDK's types, imported here: the views of this module are read at every observation,
    # and a daemon without a cluster never loads the SDK (stackd/drivers/docker_engine.py).
    from docker.types import (
        ContainerSpec,
        EndpointSpec,
        Placement,
        Resources,
        RestartPolicy,
        ServiceMode,
        TaskTemplate,
    )

    docker = model.docker
    assert docker is not None and docker.spec is not None and docker.swarm is not None
    spec, placement = docker.spec, docker.swarm
    labels = {
        **spec.labels,
        MANAGED_LABEL: "true",
        MODEL_LABEL: name,
        SPEC_LABEL: spec_digest(name, model, cluster),
    }
    container = ContainerSpec(
        image=spec.image,
        args=spec.command,
        env=dict(spec.env),
        labels=labels,
        healthcheck=_healthcheck(model, spec.healthcheck),
        stop_grace_period=docker.stop_timeout_s * NS_PER_S,
    )
    gpus = gpus_of(model, placement)
    template = TaskTemplate(
        container_spec=container,
        resources=Resources(generic_resources={cluster.gpu_resource: gpus}) if gpus else None,
        placement=Placement(constraints=list(placement.constraints)) if placement.constraints else None,
        restart_policy=RestartPolicy(condition="any", delay=RESTART_DELAY_NS),
    )
    ports = {host: (int(port.split("/")[0]), _protocol(port), "host") for port, host in spec.ports.items()}
    return {
        "task_template": template,
        "name": docker.container,
        "labels": labels,
        "mode": ServiceMode("replicated", replicas=replicas),
        "endpoint_spec": EndpointSpec(ports=ports) if ports else None,
    }


def _healthcheck(model: Model, test: Sequence[str] | None) -> Healthcheck | None:
    """The service's health check (docker.spec.healthcheck), timed by the member's health section."""
    from docker.types import Healthcheck

    if not test:
        return None
    check = model.health or HealthCheck.model_validate({})
    return Healthcheck(
        test=list(test),
        interval=int(HEALTHCHECK_INTERVAL_S * NS_PER_S),
        timeout=int(check.timeout_s * NS_PER_S),
        retries=HEALTHCHECK_RETRIES,
        start_period=int(check.start_timeout_s * NS_PER_S),
    )


def _protocol(port: str) -> str:
    return port.split("/")[1] if "/" in port else "tcp"


def member_endpoint(model: Model, node_address: str) -> str | None:
    """The configured endpoint with its host replaced by the node's address (the port is the one
    published in host mode); None when the model has no endpoint."""
    if model.endpoint is None:
        return None
    parts = urlsplit(model.endpoint)
    netloc = node_address if parts.port is None else f"{node_address}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def read_task(raw: dict[str, Any]) -> TaskView:
    status = raw.get("Status") or {}
    return TaskView(
        id=str(raw.get("ID", "")),
        state=str(status.get("State", "unknown")),
        desired=str(raw.get("DesiredState", "")),
        node_id=raw.get("NodeID") or None,
        message=str(status.get("Message", "")),
        error=status.get("Err") or None,
        created=str(raw.get("CreatedAt", "")),
    )


def node_address(raw: dict[str, Any]) -> str:
    """A node's address as the cluster sees it (the manager's own may read 0.0.0.0)."""
    addr = str((raw.get("Status") or {}).get("Addr", ""))
    manager = (raw.get("ManagerStatus") or {}).get("Addr")
    if addr in ("", "0.0.0.0") and manager:
        return str(manager).rsplit(":", 1)[0]
    return addr
