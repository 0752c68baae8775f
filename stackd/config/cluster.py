"""The ``cluster:`` section and a docker member's ``docker.swarm:`` placement (docs/scale-out.md).

With a ``cluster:`` section, a docker member that has a ``swarm:`` block is a Docker Swarm
service (replicated, scaled between 0 and 1 by the same StartContainer / StopContainer steps as a
local container) instead of a container on this host; members without one stay local. The
service takes its image, command, env, health check and ports from ``docker.spec``; ports are
published in host mode on the node the task lands on, and the member's endpoint becomes that
node's address and the published port.

Nodes are Swarm's own: their labels, addresses and GPUs (``node-generic-resources``) are read
from the manager. ``cluster.nodes`` declares what Swarm does not know: the memory of a node's
GPUs, for the per-node VRAM ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Problem = tuple[tuple[str | int, ...], str]
DEFAULT_GPU_RESOURCE = "NVIDIA-GPU"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SwarmPlacement(_Frozen):
    """Where Swarm may run a member, and what it reserves there."""

    constraints: list[str] = Field(
        default_factory=list,
        description="Swarm placement constraints, e.g. node.labels.gpu==rtx5090 or node.hostname==box2.",
    )
    gpus: int | None = Field(
        None,
        ge=0,
        description="GPUs reserved as generic resources (cluster.gpu_resource); "
        "default 1 for placement gpu, 0 otherwise.",
    )
    # An hour pending is a placement that will not happen (and a switch held that long); the
    # bound also refuses 1e300, with which a start would wait forever (models.py says why).
    pending_s: float = Field(
        3.0,
        gt=0,
        le=3_600,
        description="Seconds a task may stay pending with Swarm's reason (no suitable node …) "
        "before the start fails with that reason.",
    )


class ClusterNode(_Frozen):
    """What stackd cannot read from Swarm about one node (keyed by its hostname)."""

    gpu_memory_gb: float | None = Field(
        None, gt=0, description="VRAM of each of the node's GPUs in GiB (default cluster.gpu_memory_gb)."
    )


class ClusterConfig(_Frozen):
    engine: Literal["swarm"] = "swarm"
    docker_host: str = Field(
        description="The Swarm manager's engine: unix:///var/run/docker.sock, tcp://HOST:2376 or "
        "ssh://USER@HOST."
    )
    gpu_resource: str = Field(
        DEFAULT_GPU_RESOURCE,
        description="The generic resource kind nodes declare their GPUs as (node-generic-resources).",
    )
    gpu_memory_gb: float | None = Field(
        None, gt=0, description="VRAM of each GPU of a node in GiB unless cluster.nodes says otherwise."
    )
    nodes: dict[str, ClusterNode] = Field(default_factory=dict, description="hostname -> declared facts.")


def cluster_problems(data: Mapping[str, object]) -> list[Problem]:
    """A ``docker.swarm`` block without a ``cluster:`` section to run it on."""
    if isinstance(data.get("cluster"), dict):
        return []
    models = data.get("models")
    if not isinstance(models, dict):
        return []
    out: list[Problem] = []
    for name, model in models.items():
        docker = model.get("docker") if isinstance(model, dict) else None
        if isinstance(docker, dict) and docker.get("swarm") is not None:
            out.append(
                (
                    ("models", name, "docker", "swarm"),
                    "a swarm member needs a cluster to run on; add a top-level 'cluster:' section with "
                    "docker_host: (the Swarm manager's engine), or remove docker.swarm",
                )
            )
    return out
