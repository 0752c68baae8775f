"""What the Swarm driver reads back about nodes and members: values, no engine.

``MemberView.degraded`` is the one place that decides why a member scaled to 1 does not serve
now (its node is down, Swarm cannot place its replacement, its task pends or failed); status,
the health probe and the reason() chain all show that sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stackd.drivers.swarm_spec import TaskView, node_address


@dataclass(frozen=True)
class NodeView:
    """A node as the manager sees it; ``gpus`` are its generic resources of the GPU kind."""

    id: str
    hostname: str
    address: str
    state: str
    availability: str
    labels: Mapping[str, str]
    gpus: tuple[str, ...]
    role: str = "worker"

    @property
    def up(self) -> bool:
        return self.state == "ready"


@dataclass(frozen=True)
class MemberView:
    """Where a member's service runs now, for status, endpoints and node loss."""

    model: str
    service: str
    replicas: int
    task: TaskView | None
    node: NodeView | None
    endpoint: str | None
    lost_on: NodeView | None = None  # the down node its last task ran on, when Swarm replaced it
    failed: tuple[TaskView, ...] = ()  # its tasks that failed or were rejected with an error, oldest first
    nodes: Mapping[str, NodeView] = field(default_factory=dict)  # every node by id, as read with it

    @property
    def degraded(self) -> str | None:
        """Why a member scaled to 1 does not serve now (its node is down, its task pends), or None."""
        if self.replicas == 0:
            return None
        if self.node is not None and not self.node.up:
            return f"node {self.node.hostname} is {self.node.state}; Swarm reschedules '{self.service}'"
        if self.task is not None and self.task.state == "running":
            return None
        detail = (self.task.error or self.task.message) if self.task is not None else ""
        if self.lost_on is not None:
            where = (
                f"Swarm cannot place '{self.service}' elsewhere: {detail}"
                if detail
                else "Swarm reschedules it"
            )
            return f"node {self.lost_on.hostname} is {self.lost_on.state}; {where}"
        if self.task is None:
            return f"service '{self.service}' has no task yet"
        return f"task of '{self.service}' is {self.task.state}" + (f": {detail}" if detail else "")


def read_node(raw: dict[str, Any], kind: str) -> NodeView:
    """A node of ``api.nodes()``; its GPUs are its generic resources of ``kind`` (named ones
    by id, a discrete count as KIND-0, KIND-1 …)."""
    description = raw.get("Description") or {}
    generic = (description.get("Resources") or {}).get("GenericResources") or []
    gpus = tuple(
        str(g["NamedResourceSpec"]["Value"])
        for g in generic
        if (g.get("NamedResourceSpec") or {}).get("Kind") == kind
    )
    gpus += tuple(
        f"{kind}-{i}"
        for g in generic
        if (g.get("DiscreteResourceSpec") or {}).get("Kind") == kind
        for i in range(int(g["DiscreteResourceSpec"].get("Value", 0)))
    )
    spec = raw.get("Spec") or {}
    return NodeView(
        id=str(raw.get("ID")),
        hostname=str(description.get("Hostname", "")),
        address=node_address(raw),
        state=str((raw.get("Status") or {}).get("State", "unknown")),
        availability=str(spec.get("Availability", "active")),
        labels=dict(spec.get("Labels") or {}),
        gpus=gpus,
        role=str(spec.get("Role", "worker")),
    )
