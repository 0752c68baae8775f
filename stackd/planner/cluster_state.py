"""What the planner knows of a Swarm cluster, and the per-node GPU ledger it computes: values.

``ClusterObservation`` is read by the manager from the Swarm manager (nodes, their labels and
GPUs as generic resources, where each member's task runs) and carried in ``ObservedState``;
``ClusterLedger`` is the plan's view of each node's GPUs for the target stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClusterNode:
    """A node: ``gpus`` its GPU ids (generic resources), ``gpu_mib`` each one's VRAM when declared
    (``cluster.nodes.HOST.gpu_memory_gb`` or ``cluster.gpu_memory_gb``)."""

    hostname: str
    address: str
    up: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    gpus: tuple[str, ...] = ()
    gpu_mib: int | None = None
    role: str = "worker"


@dataclass(frozen=True)
class ClusterObservation:
    """Nodes, and the node each swarm member's running task is on (``placed``: model -> hostname).
    ``error`` says why the manager could not be read (then nodes is empty)."""

    nodes: tuple[ClusterNode, ...] = ()
    placed: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class NodeItem:
    """A member on a node's GPUs: how many it reserves, its ``memory_gb``, and whether it runs
    there now (``placed``) or would be placed there by the switch."""

    model: str
    gpus: int
    mib: int
    placed: bool


@dataclass(frozen=True)
class NodeLedger:
    hostname: str
    up: bool
    gpus: int
    gpu_mib: int | None
    items: tuple[NodeItem, ...] = ()

    @property
    def free_gpus(self) -> int:
        return self.gpus - sum(i.gpus for i in self.items)


@dataclass(frozen=True)
class ClusterLedger:
    nodes: tuple[NodeLedger, ...] = ()
