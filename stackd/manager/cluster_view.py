"""The planner's view of the cluster, read through the container driver (a config with cluster:).

``observe_cluster`` turns the driver's nodes and member views into a ``ClusterObservation``:
each node's GPUs (generic resources) with their VRAM as the config declares it, and the node
each swarm member's running task is on. A manager that cannot be read gives an observation
with ``error`` set, never an exception: status shows it and the planner skips the cluster view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stackd.config.cluster import ClusterConfig
from stackd.config.models import MIB_PER_GIB, Model
from stackd.drivers.cluster import ClusterReader
from stackd.drivers.swarm_views import MemberView, NodeView
from stackd.errors import DriverFailed, DriverUnavailable
from stackd.planner.cluster_state import ClusterNode, ClusterObservation


async def observe_cluster(
    reader: ClusterReader, cluster: ClusterConfig, models: Mapping[str, Model]
) -> ClusterObservation:
    try:
        nodes, views = await reader.read_cluster(models)
    except (DriverUnavailable, DriverFailed) as exc:
        return ClusterObservation(error=exc.message)
    return cluster_observation(cluster, nodes, views)


def cluster_observation(
    cluster: ClusterConfig, nodes: Sequence[NodeView], views: Sequence[MemberView]
) -> ClusterObservation:
    def gpu_mib(hostname: str) -> int | None:
        declared = cluster.nodes.get(hostname)
        gb = (
            declared.gpu_memory_gb
            if declared is not None and declared.gpu_memory_gb
            else cluster.gpu_memory_gb
        )
        return round(gb * MIB_PER_GIB) if gb else None

    return ClusterObservation(
        nodes=tuple(
            ClusterNode(n.hostname, n.address, n.up, dict(n.labels), n.gpus, gpu_mib(n.hostname), n.role)
            for n in nodes
        ),
        placed={
            v.model: v.node.hostname
            for v in views
            if v.node is not None and v.task is not None and v.task.state == "running"
        },
    )
