"""Issue 18: the same stacks on a real 3-node Docker Swarm (one dockerd per network namespace).

Against one swarm built for this module (node 2 has the one GPU, as a generic resource, and the
label gpu=rtx5090), the real daemon (in-process, then a real ``stackd serve``) switches stacks
whose members are Swarm services spread over the nodes:

- every one of the 12 ordered pairs of four stacks leaves exactly the target's services scaled
  to 1, each task on the node its constraints name, the roles bound, and each role's endpoint
  the node's address and published port (reachable from this host); the GPU handover stops the
  old GPU service (its task gone) before the next one starts;
- a stack with two GPU members for the one GPU fails with Swarm's own reason and the service
  that holds the GPU, a member whose image is on no node fails at once with the node's error,
  and either way the previous stack runs as before (the plan's cluster ledger and /status's
  cluster section agree with Swarm);
- a ``stackd serve`` SIGKILLed mid-switch restarts into exactly one of the two stacks;
- a member Swarm moves (its node drained) is probed and routed to at its new node;
- a node killed mid-switch: the rollback's words name the previous stack's member on it as
  degraded (not "running as before"); killed after its new member started and before the
  commit, the switch fails and is undone (it does not answer succeeded);
- a node whose dockerd is killed degrades its members (status, the metric, the log event) and
  the reason() chain skips them with that reason.

The cluster fixture fails the module when a namespace, interface, dockerd, mount, cgroup or the
directory is left after the teardown. Needs root, iproute2, nsenter/unshare and the demo image;
under CI=true a missing piece fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from stackd.manager.events import SwitchEvent
from stackd.manager.periodic import PeriodicJobs
from tests.e2e.conftest import start_daemon, stop_daemon
from tests.e2e.daemon_process import follow_until, get, kill, submit_switch
from tests.integration.conftest import demo_image, docker_engine, in_ci  # noqa: F401  (fixtures)
from tests.integration.demo_daemon import InProcessDaemon, serve_in_process
from tests.integration.swarm_cluster import SwarmCluster, swarm_cluster
from tests.integration.swarm_world import MISSING_IMAGE, ROLES, STACKS, SwarmWorld, write_config

pytestmark = pytest.mark.docker

A, B, C, D = STACKS
HOMELY = "homely"  # orch-1 and emb-1, both on node 1
TOUR = (A, B, C, D, A, C, B, D, C, A, D, B, A)


def _missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "the test swarm needs root (network namespaces, one dockerd per node)"
    for tool in ("ip", "nsenter", "unshare", "dockerd"):
        if shutil.which(tool) is None:
            return f"{tool} not found; install iproute2, util-linux and docker.io"
    return None


@pytest.fixture(scope="module")
def cluster(demo_image: str) -> Iterator[SwarmCluster]:  # noqa: F811
    missing = _missing_tools()
    if missing:
        if in_ci():
            pytest.fail(f"CI=true requires the test swarm: {missing}")
        pytest.skip(missing)
    with swarm_cluster(image=demo_image) as built:
        yield built


@pytest.fixture
def world(cluster: SwarmCluster, tmp_path: Path) -> Iterator[SwarmWorld]:
    built = write_config(cluster, tmp_path / "swarm-stacks.yaml")
    yield built
    built.remove_services()


def test_the_leftover_check_sees_a_namespace_a_process_a_mount_and_the_directory() -> None:
    missing = _missing_tools()
    if missing:
        if in_ci():
            pytest.fail(f"CI=true requires the test swarm: {missing}")
        pytest.skip(missing)
    probe = SwarmCluster()
    ns = probe.ns(1)
    mount = probe.dir / "n1" / "mnt"
    mount.mkdir(parents=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], check=True)
    # A "dockerd" left behind: a process whose command line names the directory.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(probe.dir)])
    try:
        left = probe.leftovers()
        assert f"namespace {ns}" in left and f"mount {mount}" in left and f"directory {probe.dir}" in left, (
            left
        )
        assert any(item.startswith(f"process {sleeper.pid}:") for item in left), left
    finally:
        sleeper.kill()
        sleeper.wait()
        probe.stop()
    assert probe.leftovers() == []


def test_the_tour_covers_every_ordered_pair_once() -> None:
    pairs = list(itertools.pairwise(TOUR))
    assert len(pairs) == len(set(pairs)) == 12
    assert set(pairs) == set(itertools.permutations(STACKS, 2))


async def assert_exactly(world: SwarmWorld, daemon: InProcessDaemon, stack: str) -> None:
    """Only ``stack``'s services are scaled up, each task on its node, the roles bound, and
    each role's endpoint the node's address: it answers from here."""
    expected = world.expected(stack)
    placement = await asyncio.to_thread(world.placement)
    assert placement == expected, f"{stack}: {placement} != {expected}"
    replicas = await asyncio.to_thread(world.replicas)
    assert {m for m, n in replicas.items() if n} == set(expected), replicas
    assert await daemon.bindings() == (stack, ROLES[stack])
    status = await daemon.get("/status")
    assert status["active_stack"] == stack and status["drift"] == [], status["drift"]
    endpoints = daemon.services.endpoints
    async with httpx.AsyncClient(timeout=5) as client:
        for model, hostname in expected.items():
            address = world.cluster.node(hostname).address
            endpoint = endpoints.get(model)
            assert endpoint is not None and f"//{address}:" in endpoint, (model, endpoint)
            answer = await client.get(endpoint.removesuffix("/v1") + "/health")
            assert answer.status_code == 200, (model, endpoint)


async def test_every_ordered_pair_switches_services_onto_their_nodes(
    world: SwarmWorld, tmp_path: Path
) -> None:
    async with serve_in_process(world.path, tmp_path / "state", role_drain_s=0) as daemon:
        await assert_exactly(world, daemon, A)
        for previous, target in itertools.pairwise(TOUR):
            switch = await daemon.switch(target)
            assert switch["state"] == "succeeded", f"{previous} -> {target}: {switch['error']}"
            await assert_exactly(world, daemon, target)
            if (ROLES[previous].get("vision"), ROLES[target].get("vision")) == ("gpu-a", "gpu-b"):
                kinds = [(s["kind"], s.get("model")) for s in switch["steps_done"]]
                # The handover rule: the old GPU task is gone before the next GPU member starts.
                assert kinds.index(("stop_container", "gpu-a")) < kinds.index(("start_container", "gpu-b"))


async def test_starts_swarm_cannot_do_fail_with_swarms_reason_and_undo(
    world: SwarmWorld, tmp_path: Path
) -> None:
    async with serve_in_process(world.path, tmp_path / "state", role_drain_s=0) as daemon:
        await assert_exactly(world, daemon, A)
        started = time.monotonic()
        switch = await daemon.switch("greedy")
        took = time.monotonic() - started
        assert switch["state"] != "succeeded"
        error = switch["error"]
        assert "Swarm cannot place service 'sw-gpu-b'" in error, error
        assert "no suitable node (insufficient resources on 3 nodes)" in error, error
        assert "1 NVIDIA-GPU" in error and "node.labels.gpu==rtx5090" in error, error
        gpu_node = world.node_of("gpu-a")
        assert f"GPU-0 of {gpu_node} is held by service sw-gpu-a" in error, error
        assert took < 20, f"the refusal took {took:.1f} s: Swarm's reason hid behind a timeout"
        status = await daemon.get("/status")
        assert "insufficient resources" in status["last_switch"]["error"], status["last_switch"]
        started = time.monotonic()
        switch = await daemon.switch("ghostly")
        took = time.monotonic() - started
        error = switch["error"]
        assert switch["state"] != "succeeded" and f"No such image: {MISSING_IMAGE}" in error, error
        assert f"on node {world.node_of('ghost-3')}" in error, error
        assert took < 20, f"an image missing on the node took {took:.1f} s to fail the start"
        await assert_exactly(world, daemon, A)
        cluster = status["cluster"]
        assert {n["hostname"]: n["gpus"] for n in cluster["nodes"]} == {
            n.hostname: list(n.gpus) for n in world.cluster.nodes
        }
        assert cluster["placed"] == world.expected(A)
        await assert_exactly(world, daemon, A)


def test_a_daemon_sigkilled_mid_switch_restarts_into_one_whole_stack(
    world: SwarmWorld, tmp_path: Path
) -> None:
    daemon = start_daemon(tmp_path, "--no-periodic", config=str(world.path))
    try:
        assert get(daemon, "/model-stacks")["active"] == A
        switch_id = submit_switch(daemon, B)

        def first_service_up(event: dict[str, object]) -> bool:
            step = event.get("step")
            return (
                event["type"] == "step_done" and isinstance(step, dict) and step["kind"] == "start_container"
            )

        follow_until(daemon, switch_id, first_service_up)
        kill(daemon)
    finally:
        if daemon.proc.poll() is None:
            stop_daemon(daemon)
    mid = world.replicas()
    assert {m for m, n in mid.items() if n} not in ({*ROLES[A].values()}, {*ROLES[B].values()}), mid
    (tmp_path / "daemon.log").rename(tmp_path / "daemon-killed.log")
    daemon = start_daemon(tmp_path, "--no-periodic", config=str(world.path))
    try:
        status = get(daemon, "/status")
        recovery = status["recovery_detail"]
        assert recovery["action"] in ("finished", "rolled_back"), recovery
        stack = status["active_stack"]
        assert stack in (A, B) and status["drift"] == [], status
        placement = world.placement()
        assert placement == world.expected(stack), placement
        assert {m for m, n in world.replicas().items() if n} == set(ROLES[stack].values())
        roles = get(daemon, "/roles")
        assert {r["role"]: r["model"] for r in roles["roles"]} == ROLES[stack]
        for row in roles["roles"]:  # the restarted daemon found each member's node at once
            address = world.cluster.node(placement[row["model"]]).address
            assert f"//{address}:" in row["health_url"], row
            assert httpx.get(row["health_url"], timeout=5).status_code == 200, row
    finally:
        stop_daemon(daemon)


async def test_a_member_swarm_moves_is_reached_at_its_new_node(world: SwarmWorld, tmp_path: Path) -> None:
    async with serve_in_process(world.path, tmp_path / "state", role_drain_s=0) as daemon:
        switch = await daemon.switch("roaming")
        assert switch["state"] == "succeeded", switch["error"]
        first = world.cluster.node((await asyncio.to_thread(world.placement))["roam"])
        other = next(n for n in world.cluster.nodes[1:] if n != first)
        endpoints = daemon.services.endpoints
        assert f"//{first.address}:" in (endpoints.get("roam") or "")
        await asyncio.to_thread(world.set_availability, first.hostname, "drain")
        try:
            deadline = time.monotonic() + 30
            while (
                f"//{other.address}:" not in (endpoints.get("roam") or "")
                or "roam" in daemon.services.manager.degraded
            ):
                assert time.monotonic() < deadline, (endpoints.get("roam"), daemon.services.manager.degraded)
                await PeriodicJobs(daemon.services.manager).probe_health()
                await asyncio.sleep(0.3)
            assert (await asyncio.to_thread(world.placement))["roam"] == other.hostname
            # The router follows: the chain's first strategy now calls roam at its new node.
            answer = await daemon.client.post("/tools/reason", json={"problem": "2+2?"})
            first_attempt = answer.json()["attempts"][0]
            assert first_attempt["backend"] == "roam" and other.address in first_attempt["reason"], (
                first_attempt
            )
        finally:
            await asyncio.to_thread(world.set_availability, first.hostname, "active")


SCENARIO_S = 180.0  # a node-loss scenario's bound: a start pends 2 s, a stop waits up to 18 s


async def submit(daemon: InProcessDaemon, stack: str) -> str:
    """``POST /model-stacks/switch`` with ``wait: false``; the switch's id."""
    answer = await daemon.client.post("/model-stacks/switch", json={"stack": stack, "wait": False})
    assert answer.status_code == 202, answer.text
    switch_id: str = answer.json()["switch_id"]
    return switch_id


async def event_where(
    daemon: InProcessDaemon, switch_id: str, wanted: Callable[[SwitchEvent], bool]
) -> SwitchEvent:
    """The first event of the switch that ``wanted`` accepts; fails if the switch ends first."""
    seen: list[str] = []
    async for event in daemon.services.manager.events(switch_id):
        if wanted(event):
            return event
        seen.append(event["type"])
        if event["type"] == "finished":
            break
    raise AssertionError(f"switch {switch_id} ended before the awaited event; events: {seen}")


def finished(event: SwitchEvent) -> bool:
    return event["type"] == "finished"


async def test_a_node_killed_mid_switch_the_rollback_names_its_member_degraded(
    world: SwarmWorld, cluster: SwarmCluster, tmp_path: Path
) -> None:
    """gamma (orch-1 on node 1, emb-3 on node 3) -> delta (orch-3 on node 3, emb-1 on node 1):
    node 3's dockerd is SIGKILLed as the switch's first step starts. orch-3 cannot start there,
    the switch is undone in full (its stops come last: nothing of gamma was stopped), and its
    words say what is true: emb-3, left on the dead node, is degraded, orch-1 answers; not
    "'gamma' is running as before" (issue 22: that sentence was said on trust)."""
    node3 = cluster.nodes[2]
    try:
        async with serve_in_process(world.path, tmp_path / "state", role_drain_s=0) as daemon:
            switch = await daemon.switch(C)
            assert switch["state"] == "succeeded", switch["error"]
            async with asyncio.timeout(SCENARIO_S):
                switch_id = await submit(daemon, D)
                await event_where(daemon, switch_id, lambda e: e["type"] == "step_started")
                await asyncio.to_thread(cluster.kill_dockerd, node3)
                await event_where(daemon, switch_id, finished)
            answer = await daemon.get(f"/model-stacks/switch/{switch_id}")
            error = answer["error"]
            print(f"\nrollback words ({node3.hostname} killed mid-switch): {error}")
            assert answer["state"] != "succeeded", answer
            assert "orch-3" in error.split(" failed: ")[0], error  # the start on the dead node
            assert "could not be undone" not in error, error
            assert "running as before" not in error, error
            assert f"'{C}' is back but degraded: emb-3 is degraded (" in error, error
            assert error.endswith("; orch-1 answers"), error
            # What the words say is what status shows at once, without a periodic probe.
            status = await daemon.get("/status")
            assert status["active_stack"] == C, status["active_stack"]
            members = {m["name"]: m for m in status["members"]}
            assert members["emb-3"]["state"] == "degraded", members["emb-3"]
            assert members["orch-1"]["state"] == "running", members["orch-1"]
            assert await daemon.bindings() == (C, ROLES[C])
    finally:
        await asyncio.to_thread(cluster.restart_dockerd, node3)


async def test_a_new_members_node_killed_before_the_commit_fails_the_switch(
    world: SwarmWorld, cluster: SwarmCluster, tmp_path: Path
) -> None:
    """homely (orch-1, emb-1, both on node 1) -> gamma starts emb-3 on node 3 and stops emb-1
    last. A request still running on emb-1 (counted in flight, as the router counts its calls)
    holds the switch before that stop, after emb-3's start succeeded; node 3's dockerd is
    SIGKILLed there and the request let go. The switch must not answer succeeded (issue 22: it
    did, with its new member's node already down): the probe before the commit finds emb-3
    silent, and the undo puts homely back."""
    node3 = cluster.nodes[2]
    try:
        async with serve_in_process(world.path, tmp_path / "state", role_drain_s=0) as daemon:
            switch = await daemon.switch(HOMELY)
            assert switch["state"] == "succeeded", switch["error"]
            in_flight = daemon.services.manager.live_roles.in_flight
            async with asyncio.timeout(SCENARIO_S):
                with in_flight.using("emb-1"):
                    switch_id = await submit(daemon, C)
                    done = await event_where(
                        daemon,
                        switch_id,
                        lambda e: e["type"] == "step_done" and e["step"]["kind"] == "start_container",
                    )
                    assert done["step"]["model"] == "emb-3", done
                    await event_where(daemon, switch_id, lambda e: e["type"] == "draining")
                    await asyncio.to_thread(cluster.kill_dockerd, node3)
                await event_where(daemon, switch_id, finished)
            answer = await daemon.get(f"/model-stacks/switch/{switch_id}")
            error = answer["error"]
            print(f"\nswitch words ({node3.hostname} killed before the commit): {error}")
            assert answer["state"] != "succeeded", answer
            assert error.startswith("start_container emb-3 (sw-emb-3) failed: it no longer answered"), error
            assert error.endswith(f"'{HOMELY}' is running as before (emb-1, orch-1 answer)"), error
            assert await daemon.bindings() == (HOMELY, ROLES[HOMELY])
            replicas = await asyncio.to_thread(world.replicas)
            assert {m for m, n in replicas.items() if n} == set(ROLES[HOMELY].values()), replicas
    finally:
        await asyncio.to_thread(cluster.restart_dockerd, node3)


async def test_a_killed_node_degrades_its_members_and_the_chain_skips_them(
    world: SwarmWorld, cluster: SwarmCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs last: node 3 stays down for the rest of the module."""
    async with serve_in_process(world.path, tmp_path / "state", role_drain_s=0) as daemon:
        switch = await daemon.switch(C)  # orch-1 on node 1, emb-3 on node 3
        assert switch["state"] == "succeeded", switch["error"]
        manager = daemon.services.manager
        jobs = PeriodicJobs(manager)
        healthy, summary = await jobs.probe_health()
        assert healthy, summary
        node3 = cluster.nodes[2]
        await asyncio.to_thread(cluster.kill_dockerd, node3)
        # At once its endpoint stops answering; Swarm marks the node down ~10 s later, and from
        # then on the reason names the node.
        down = f"node {node3.hostname} is down"
        deadline = time.monotonic() + 40
        while down not in manager.degraded.get("emb-3", ""):
            assert time.monotonic() < deadline, f"emb-3: {manager.degraded.get('emb-3')}"
            await PeriodicJobs(manager).probe_health()  # a new one probes every member now
            await asyncio.sleep(0.5)
        assert "orch-1" not in manager.degraded
        members = {m["name"]: m for m in (await daemon.get("/status"))["members"]}
        assert members["emb-3"]["state"] == "degraded" and node3.hostname in members["emb-3"]["detail"]
        assert members["orch-1"]["state"] == "running"
        metrics = (await daemon.client.get("/metrics")).text
        assert 'stackd_member_degraded{model="emb-3"} 1.0' in metrics, metrics
        assert 'stackd_member_degraded{model="orch-1"}' not in metrics
        assert any(r.getMessage().startswith("member emb-3 degraded: ") for r in caplog.records)
        answer = await daemon.client.post("/tools/reason", json={"problem": "2+2?"})
        assert answer.status_code == 503, answer.text  # orch-1, the demo image, has no chat API
        first, then = answer.json()["attempts"]
        # The next strategy went to orch-1 at node 1's address.
        assert then["backend"] == "orch-1" and cluster.nodes[0].address in then["reason"], then
        assert first["backend"] == "emb-3" and first["status"] == "skipped", first
        assert down in first["reason"], first
