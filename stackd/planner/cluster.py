"""The cluster view of a switch: each node's GPUs and what the target stack puts on them. Pure.

Swarm places tasks itself, so the planner does not pick nodes for it; it predicts them, to show
the per-node ledger in the plan and ``/status`` and to refuse what Swarm cannot know:

* a member whose ``memory_gb`` exceeds the VRAM of the GPUs it would reserve on every node that
  satisfies its constraints (declared with ``cluster.gpu_memory_gb`` / ``cluster.nodes``);
* a node whose members' ``memory_gb`` together exceed its GPUs' VRAM.

GPU *counts* are Swarm's to enforce: a member for which no node has a free GPU shows as
oversubscribed in the ledger, and its start fails with Swarm's own reason ("no suitable node
(insufficient resources on 3 nodes)") and the services that hold the GPUs.

Prediction: members that run stay on their node; a member about to start goes to the first up
node (in Swarm's node order) that satisfies its constraints and has free GPUs. Members leaving
the stack free their GPUs first (the handover rule), except an orchestrator that must run until
its successor is up. Constraints other than ``node.hostname`` / ``node.role`` /
``node.labels.KEY`` with ``==`` / ``!=`` are left to Swarm (treated as satisfied).
"""

from __future__ import annotations

import re

from stackd.config.models import StacksConfig
from stackd.planner.cluster_state import ClusterLedger, ClusterNode, NodeItem, NodeLedger
from stackd.planner.members import ORCHESTRATOR, gib, holds_node_gpu, is_up
from stackd.planner.plan import ObservedState, Refusal

_CONSTRAINT = re.compile(r"^\s*(node\.hostname|node\.role|node\.labels\.([\w.-]+))\s*(==|!=)\s*(.+?)\s*$")


def satisfies(node: ClusterNode, constraint: str) -> bool:
    """Whether ``node`` meets one Swarm placement constraint (unknown kinds: Swarm decides)."""
    match = _CONSTRAINT.match(constraint)
    if match is None:
        return True
    field, label, op, value = match.groups()
    if field == "node.hostname":
        actual: str | None = node.hostname
    elif field == "node.role":
        actual = node.role
    else:
        actual = node.labels.get(label)
    return (actual == value) == (op == "==")


def gpus_needed(config: StacksConfig, name: str) -> int:
    model = config.models[name]
    swarm = model.docker.swarm if model.docker is not None else None
    if swarm is None or not holds_node_gpu(model):
        return 0
    return swarm.gpus if swarm.gpus is not None else 1


def cluster_ledger(
    config: StacksConfig, stack: str, observed: ObservedState
) -> tuple[ClusterLedger | None, list[Refusal]]:
    """The per-node GPU ledger of ``stack`` and the refusals; (None, []) without a cluster view."""
    cluster = observed.cluster
    if cluster is None or cluster.error is not None or not cluster.nodes:
        return None, []
    items: dict[str, list[NodeItem]] = {n.hostname: [] for n in cluster.nodes}
    members = [n for n in config.stacks[stack].member_names if gpus_needed(config, n)]
    for name in _holding(config, stack, observed):
        host = cluster.placed.get(name)
        if host is not None and host in items:
            items[host].append(
                NodeItem(name, gpus_needed(config, name), config.models[name].memory_mib, True)
            )
    refusals: list[Refusal] = []
    for name in members:
        if name in cluster.placed and is_up(name, config.models[name], observed):
            continue
        node, why = _place(config, name, cluster.nodes, items)
        if node is not None:
            items[node.hostname].append(
                NodeItem(name, gpus_needed(config, name), config.models[name].memory_mib, False)
            )
        elif why is not None:
            refusals.append(Refusal("cluster", f"{stack} cannot run {name} on the cluster: {why}", name))
    ledger = ClusterLedger(
        tuple(
            NodeLedger(n.hostname, n.up, len(n.gpus), n.gpu_mib, tuple(items[n.hostname]))
            for n in cluster.nodes
        )
    )
    for node_ledger in ledger.nodes:
        refusal = _overfull(stack, node_ledger)
        if refusal is not None:
            refusals.append(refusal)
    return ledger, refusals


def _holding(config: StacksConfig, stack: str, observed: ObservedState) -> list[str]:
    """Swarm GPU members that hold their GPUs while the target's members start: the target's
    members that run, and an orchestrator that leaves only once its successor is up."""
    target = config.stacks[stack]
    members = set(target.member_names)
    out = []
    for name, model in config.models.items():
        if not holds_node_gpu(model) or not is_up(name, model, observed):
            continue
        old_orchestrator = observed.bindings.get(ORCHESTRATOR) == name != target.roles.get(ORCHESTRATOR)
        if name in members or old_orchestrator:
            out.append(name)
    return out


def _place(
    config: StacksConfig, name: str, nodes: tuple[ClusterNode, ...], items: dict[str, list[NodeItem]]
) -> tuple[ClusterNode | None, str | None]:
    """The node Swarm would likely pick, or (None, why it must be refused) — why is None when
    only GPU counts are short (Swarm's reason will say so at the start)."""
    model = config.models[name]
    assert model.docker is not None and model.docker.swarm is not None
    need = gpus_needed(config, name)
    matching = [n for n in nodes if n.up and all(satisfies(n, c) for c in model.docker.swarm.constraints)]
    fits = [n for n in matching if n.gpu_mib is None or model.memory_mib <= need * n.gpu_mib]
    for node in fits:
        if len(node.gpus) - sum(i.gpus for i in items[node.hostname]) >= need:
            return node, None
    if matching and not fits:
        sizes = ", ".join(f"{n.hostname} {len(n.gpus)} x {gib(n.gpu_mib or 0)}" for n in matching)
        return None, (
            f"it needs {gib(model.memory_mib)} on {need} GPU(s) but the nodes it may run on have less ({sizes}); "
            "lower its memory_gb, reserve more GPUs (docker.swarm.gpus) or label a larger node"
        )
    return None, None


def _overfull(stack: str, node: NodeLedger) -> Refusal | None:
    if node.gpu_mib is None:
        return None
    total = node.gpus * node.gpu_mib
    used = sum(i.mib for i in node.items)
    if used <= total:
        return None
    held = ", ".join(f"{i.model} {gib(i.mib)}" + (" (running)" if i.placed else "") for i in node.items)
    return Refusal(
        "cluster",
        f"{stack} would put {gib(used)} on node {node.hostname}'s GPUs ({held}) but they have {gib(total)}: "
        f"{gib(used - total)} short; pin a member to another node (docker.swarm.constraints) or lower memory_gb",
        node.items[-1].model if node.items else None,
    )
