"""Swarm members without a swarm: the config, the service spec, the cluster ledger and the
handover order, all pure (issue 18; the real swarm is tests/integration/test_swarm.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from stackd.cli.cluster_view import cluster_status_table
from stackd.cli.offline import plan_shape
from stackd.cli.render import plan_renderable
from stackd.cli.shapes import ClusterStatus
from stackd.config.cluster import ClusterConfig
from stackd.config.loader import load_config
from stackd.config.models import StacksConfig
from stackd.drivers.docker import DockerContainerDriver
from stackd.drivers.swarm_spec import TaskView, member_endpoint, service_options
from stackd.drivers.swarm_views import MemberView, NodeView
from stackd.errors import ConfigError, DriverFailed
from stackd.hardware.types import GpuDevice
from stackd.planner import plan_switch
from stackd.planner.cluster import satisfies
from stackd.planner.cluster_state import ClusterNode, ClusterObservation
from stackd.planner.plan import ObservedState, StartContainer, StopContainer
from tests.unit.conftest_planner import snapshot

GPU_NODE = ClusterNode("box2", "10.0.0.2", True, {"gpu": "rtx5090"}, ("GPU-0",), 24 * 1024)
CPU_NODE = ClusterNode("box1", "10.0.0.1", True, {"role": "cpu"}, (), None, "manager")


def member(port: int, gpu: bool, memory_gb: float = 8, **swarm: Any) -> dict[str, Any]:
    return {
        "runtime": "docker",
        "placement": "gpu" if gpu else "cpu",
        "api": "openai",
        "endpoint": f"http://127.0.0.1:{port}/v1",
        "memory_gb": memory_gb,
        "docker": {
            "container": f"svc-{port}",
            "stop_timeout_s": 5,
            "spec": {"image": "demo:1", "command": ["serve", "--port", "8000"], "ports": {"8000/tcp": port}},
            "swarm": {
                "constraints": ["node.labels.gpu==rtx5090"] if gpu else ["node.hostname==box1"],
                **swarm,
            },
        },
    }


def config(tmp_path: Path, vision_gb: float = 8, cluster: bool = True) -> StacksConfig:
    data: dict[str, Any] = {
        "default_stack": "a",
        "roles": {"orchestrator": {"required": True}, "vision": {}},
        "models": {
            "orch": member(9001, gpu=False, memory_gb=1),
            "vis-a": member(9002, gpu=True, memory_gb=vision_gb),
            "vis-b": member(9003, gpu=True),
        },
        "stacks": {
            "a": {"roles": {"orchestrator": "orch", "vision": "vis-a"}},
            "b": {"roles": {"orchestrator": "orch", "vision": "vis-b"}},
        },
    }
    if cluster:
        data["cluster"] = {"docker_host": "unix:///run/swarm.sock", "gpu_memory_gb": 24}
    path = tmp_path / "stacks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path, env={})


def observed(running: set[str], placed: dict[str, str], bindings: dict[str, str]) -> ObservedState:
    return ObservedState(
        active_stack="a",
        running_containers=frozenset(running),
        bindings=bindings,
        cluster=ClusterObservation((CPU_NODE, GPU_NODE), placed),
    )


class NoGpu:
    """This host has no GPU at all (no NVIDIA driver)."""

    source = "none"

    def read(self) -> tuple[tuple[GpuDevice, ...], str]:
        return (), "no NVIDIA driver"


NO_GPU_HERE = snapshot(NoGpu())


def test_a_swarm_member_without_a_cluster_is_refused_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        config(tmp_path, cluster=False)
    text = str(refused.value)
    assert "stacks.yaml:" in text and "a swarm member needs a cluster to run on" in text, text
    assert "docker.swarm" in text


def test_a_service_takes_the_spec_with_host_ports_gpus_and_constraints(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert cfg.cluster is not None
    options = service_options("vis-a", cfg.models["vis-a"], cfg.cluster, replicas=1)
    template = options["task_template"]
    assert options["name"] == "svc-9002" and options["mode"]["replicated"] == {"Replicas": 1}
    assert template["ContainerSpec"]["Args"] == ["serve", "--port", "8000"]  # CMD, as docker run
    assert template["ContainerSpec"]["StopGracePeriod"] == 5 * 10**9
    assert template["Placement"]["Constraints"] == ["node.labels.gpu==rtx5090"]
    reservations = template["Resources"]["Reservations"]["GenericResources"]
    assert reservations == [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}]
    assert options["endpoint_spec"]["Ports"] == [
        {"PublishedPort": 9002, "TargetPort": 8000, "Protocol": "tcp", "PublishMode": "host"}
    ]
    assert options["labels"]["stackd.model"] == "vis-a" and options["labels"]["stackd.managed"] == "true"
    cpu = service_options("orch", cfg.models["orch"], cfg.cluster, replicas=0)
    assert cpu["task_template"].get("Resources") is None  # no GPU reserved for a CPU member


def test_the_endpoint_is_the_nodes_address_and_the_published_port(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert member_endpoint(cfg.models["vis-a"], "10.0.0.2") == "http://10.0.0.2:9002/v1"


@pytest.mark.parametrize(
    ("constraint", "on_gpu_node"),
    [
        ("node.labels.gpu==rtx5090", True),
        ("node.labels.gpu!=rtx5090", False),
        ("node.labels.gpu==a100", False),
        ("node.hostname==box2", True),
        ("node.hostname != box2", False),
        ("node.role==manager", False),
        ("node.platform.os==linux", True),  # left to Swarm
    ],
)
def test_constraints_are_read_like_swarm(constraint: str, on_gpu_node: bool) -> None:
    assert satisfies(GPU_NODE, constraint) is on_gpu_node


def test_swarm_members_never_count_against_this_hosts_card(tmp_path: Path) -> None:
    plan = plan_switch(config(tmp_path), ObservedState(), "a", NO_GPU_HERE)
    assert plan.feasible, plan.refusals
    assert plan.vram is None  # no local GPU member: no local card needed


def test_the_old_gpu_service_stops_before_the_next_one_starts(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    now = observed(
        {"orch", "vis-a"}, {"orch": "box1", "vis-a": "box2"}, {"orchestrator": "orch", "vision": "vis-a"}
    )
    plan = plan_switch(cfg, now, "b", NO_GPU_HERE)
    assert plan.feasible, plan.refusals
    kinds = [type(s) for s in plan.steps if isinstance(s, StartContainer | StopContainer)]
    assert kinds == [StopContainer, StartContainer]
    assert [s.model for s in plan.steps if isinstance(s, StartContainer | StopContainer)] == [
        "vis-a",
        "vis-b",
    ]
    assert plan.cluster is not None
    gpu = next(n for n in plan.cluster.nodes if n.hostname == "box2")
    assert [(i.model, i.placed) for i in gpu.items] == [("vis-b", False)] and gpu.free_gpus == 0


def test_a_member_larger_than_the_nodes_gpus_is_refused_naming_the_node(tmp_path: Path) -> None:
    cfg = config(tmp_path, vision_gb=30)
    plan = plan_switch(cfg, observed(set(), {}, {}), "a", NO_GPU_HERE)
    assert not plan.feasible
    [refusal] = plan.refusals
    assert refusal.code == "cluster" and refusal.model == "vis-a"
    assert "a cannot run vis-a on the cluster: it needs 30 GiB on 1 GPU(s)" in refusal.message
    assert "box2 1 x 24 GiB" in refusal.message


def test_a_gpu_held_by_a_member_that_stays_is_shown_as_oversubscribed_and_left_to_swarm(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    both = StacksConfig.model_validate(
        {
            **cfg.model_dump(),
            "stacks": {
                **cfg.model_dump()["stacks"],
                "both": {"roles": {"orchestrator": "orch", "vision": "vis-a"}, "members": ["vis-b"]},
            },
        }
    )
    now = observed(
        {"orch", "vis-a"}, {"orch": "box1", "vis-a": "box2"}, {"orchestrator": "orch", "vision": "vis-a"}
    )
    plan = plan_switch(both, now, "both", NO_GPU_HERE)
    assert plan.feasible, plan.refusals  # Swarm's reason says it at the start
    assert plan.cluster is not None
    gpu = next(n for n in plan.cluster.nodes if n.hostname == "box2")
    assert [(i.model, i.placed) for i in gpu.items] == [("vis-a", True)] and gpu.free_gpus == 0


def node(state: str = "ready") -> NodeView:
    return NodeView("n2", "box2", "10.0.0.2", state, "active", {}, ("GPU-0",))


def task(state: str, error: str | None = None, node_id: str | None = "n2") -> TaskView:
    return TaskView("t1", state, "running", node_id, "", error, "2026-12-01T10:00:00Z")


def test_a_member_says_why_it_does_not_serve() -> None:
    assert MemberView("m", "svc", 1, task("running"), node(), "http://10.0.0.2:1/v1").degraded is None
    assert MemberView("m", "svc", 0, None, None, None).degraded is None  # scaled to 0: not a member now
    down = MemberView("m", "svc", 1, task("running"), node("down"), None).degraded
    assert down == "node box2 is down; Swarm reschedules 'svc'"
    err = "no suitable node (1 node not available for new tasks)"
    lost = MemberView("m", "svc", 1, task("pending", err, None), None, None, lost_on=node("down")).degraded
    assert lost == f"node box2 is down; Swarm cannot place 'svc' elsewhere: {err}"
    pending = MemberView("m", "svc", 1, task("pending", "no suitable node", None), None, None).degraded
    assert pending == "task of 'svc' is pending: no suitable node"


def test_a_cluster_section_names_the_manager() -> None:
    with pytest.raises(ValueError, match="docker_host"):
        ClusterConfig.model_validate({})


def rendered(renderable: object) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_stackd_plan_prints_each_nodes_gpus_and_the_members_on_them(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    now = observed(
        {"orch", "vis-a"}, {"orch": "box1", "vis-a": "box2"}, {"orchestrator": "orch", "vision": "vis-a"}
    )
    text = rendered(plan_renderable(plan_shape(plan_switch(cfg, now, "b", NO_GPU_HERE))))
    assert "cluster nodes" in text
    row = next(line for line in text.splitlines() if "box2" in line)
    assert "up" in row and "24 GiB" in row and "vis-b (1) new" in row and row.rstrip(" │").endswith("0"), row


def test_stackd_status_prints_where_each_member_runs() -> None:
    cluster: ClusterStatus = {
        "nodes": [
            {"hostname": "box1", "address": "10.0.0.1", "up": True, "labels": {"role": "cpu"}, "gpus": []},
            {"hostname": "box2", "address": "10.0.0.2", "up": False, "labels": {}, "gpus": ["GPU-0"]},
        ],
        "placed": {"orch": "box1"},
        "error": None,
    }
    text = rendered(cluster_status_table(cluster))
    assert "box1" in text and "role=cpu" in text and "orch" in text
    assert "down" in next(line for line in text.splitlines() if "box2" in line)
    assert "manager gone" in rendered(cluster_status_table({"error": "manager gone"}))


async def test_the_local_engine_never_runs_a_swarm_member(tmp_path: Path) -> None:
    """A reload that adds docker.swarm to a daemon started without a cluster must not start the
    member as a local container."""
    cfg = config(tmp_path)
    driver = DockerContainerDriver(client_factory=lambda: pytest.fail("the engine was called"))
    with pytest.raises(DriverFailed, match="is a swarm member but the daemon started without a cluster"):
        await driver.ensure_running("vis-a", cfg.models["vis-a"])
