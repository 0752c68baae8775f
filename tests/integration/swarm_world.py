"""Four stacks whose members are Swarm services spread over the test swarm's three nodes.

Every member is the demo image (busybox httpd: /health, /v1/models) as a service: two
orchestrators pinned by hostname (node 1, node 3), two embeddings members likewise, and two
GPU members that need the GPU node's one GPU (``node.labels.gpu==rtx5090``, one NVIDIA-GPU).
``greedy`` binds both GPU members at once: Swarm can place only one.

``placement`` reads where each running service's task is, from the manager: the check that
every service runs on the node its constraints name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.integration.swarm_cluster import SwarmCluster

STACKS = ("alpha", "beta", "gamma", "delta")
PORTS = {"orch-1": 18201, "orch-3": 18202, "emb-1": 18203, "emb-3": 18204, "gpu-a": 18205, "gpu-b": 18206}
MISSING_IMAGE = "stackd-missing:none"  # on no node: "ghost-3" can never start
EXTRA_PORTS = {"ghost-3": 18207, "roam": 18208}  # roam: any worker node (2 or 3), Swarm picks
ROLES = {
    "alpha": {"orchestrator": "orch-1", "vision": "gpu-a"},
    "beta": {"orchestrator": "orch-3", "vision": "gpu-b"},
    "gamma": {"orchestrator": "orch-1", "embeddings": "emb-3"},
    "delta": {"orchestrator": "orch-3", "embeddings": "emb-1"},
    "greedy": {"orchestrator": "orch-1", "vision": "gpu-a", "diffusion": "gpu-b"},
    "ghostly": {"orchestrator": "orch-1", "embeddings": "ghost-3"},
    "roaming": {"orchestrator": "orch-1", "embeddings": "roam"},
    # Both on the manager's node: a switch from it to gamma adds one member on node 3 and stops
    # a CPU member last (a leaving GPU member stops first), the moment a node-loss test needs.
    "homely": {"orchestrator": "orch-1", "embeddings": "emb-1"},
}


@dataclass(frozen=True)
class SwarmWorld:
    cluster: SwarmCluster
    path: Path

    def node_of(self, model: str) -> str:
        """The hostname a member's constraints pin it to."""
        if model.startswith("gpu-"):
            return next(n.hostname for n in self.cluster.nodes if n.gpus)
        return self.cluster.nodes[int(model[-1]) - 1].hostname

    def placement(self) -> dict[str, str]:
        """Running service -> hostname of the node its running task is on."""
        client = self.cluster.manager.client()
        try:
            hostnames = {n.id: n.attrs["Description"]["Hostname"] for n in client.nodes.list()}
            out = {}
            for service in client.services.list():
                running = [t for t in service.tasks() if t["Status"]["State"] == "running"]
                if running:
                    out[service.name.removeprefix("sw-")] = hostnames[running[0]["NodeID"]]
            return out
        finally:
            client.close()

    def replicas(self) -> dict[str, int]:
        client = self.cluster.manager.client()
        try:
            return {
                s.name.removeprefix("sw-"): s.attrs["Spec"]["Mode"]["Replicated"]["Replicas"]
                for s in client.services.list()
            }
        finally:
            client.close()

    def set_availability(self, hostname: str, availability: str) -> None:
        """``docker node update --availability drain|active HOSTNAME``."""
        client = self.cluster.manager.client()
        try:
            node = client.nodes.get(hostname)
            node.update({**node.attrs["Spec"], "Availability": availability})
        finally:
            client.close()

    def expected(self, stack: str) -> dict[str, str]:
        return {model: self.node_of(model) for model in ROLES[stack].values()}

    def remove_services(self) -> None:
        client = self.cluster.manager.client()
        try:
            for service in client.services.list():
                service.remove()
        finally:
            client.close()


def _member(world_cluster: SwarmCluster, name: str, local: bool = False) -> dict[str, object]:
    port = PORTS.get(name) or EXTRA_PORTS[name]
    gpu = name.startswith("gpu-")
    if gpu:
        constraints = ["node.labels.gpu==rtx5090"]
    elif name == "roam":
        constraints = ["node.role==worker"]
    else:
        constraints = [f"node.hostname=={world_cluster.nodes[int(name[-1]) - 1].hostname}"]
    docker: dict[str, object] = {
        "container": f"{'bl' if local else 'sw'}-{name}",
        "stop_timeout_s": 3,
        "spec": {
            "image": MISSING_IMAGE if name.startswith("ghost") else world_cluster.image,
            "env": {"PORT": "8000", "MODEL_NAME": name},
            "ports": {"8000/tcp": port},
        },
    }
    if not local:
        docker["swarm"] = {"constraints": constraints, **({"gpus": 1} if gpu else {}), "pending_s": 2}
    return {
        "runtime": "docker",
        "placement": "gpu" if gpu else "cpu",
        "api": "openai",
        "endpoint": f"http://127.0.0.1:{port}/v1",
        "memory_gb": 8 if gpu else 1,
        "health": {"path": "/health", "interval_s": 1, "timeout_s": 2, "start_timeout_s": 30},
        "docker": docker,
    }


def write_config(
    cluster: SwarmCluster, path: Path, default_stack: str = "alpha", local: bool = False
) -> SwarmWorld:
    """The stacks as Swarm services of ``cluster``; ``local``: the same members as containers of
    the engine at DOCKER_HOST (named bl-*, on a budgeted 48 GiB card), for the benchmark."""
    placement: dict[str, object] = (
        {"gpu": {"total_gb": 48}}
        if local
        else {"cluster": {"docker_host": cluster.manager.url, "gpu_memory_gb": 24}}
    )
    config = {
        "version": 1,
        "default_stack": default_stack,
        **placement,
        "roles": {
            "orchestrator": {"required": True},
            "vision": {},
            "embeddings": {},
            "diffusion": {},
        },
        "models": {name: _member(cluster, name, local) for name in [*PORTS, *EXTRA_PORTS]},
        "stacks": {name: {"roles": roles} for name, roles in ROLES.items()},
        "reason": {
            "strategies": {
                "search": {"role": "embeddings"},
                "local": {"role": "orchestrator"},
            },
            "default_chain": ["search", "local"],
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return SwarmWorld(cluster, path)
