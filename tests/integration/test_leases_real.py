"""Leases on a real Docker engine: the demo's vision and FLUX stand-ins (swap group gpu-creative).

A lease starts the on-demand container and answers once it is healthy; a lease on FLUX that does
not wait is answered 503 (Retry-After, the lease named) while vision's lease lives (409 before the
wait queue), and evicts vision once that lease is released. The second
test drives the same through ``stackd lease`` against a ``stackd serve`` process.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_daemon, stop_daemon
from tests.integration.demo_daemon import serve_in_process
from tests.integration.demo_world import DemoWorld, WorldFactory, demo_worlds, sims  # noqa: F401

pytestmark = pytest.mark.docker

VISION, FLUX = "vision-qwen25vl", "comfyui-flux"


def container(world: DemoWorld, model: str) -> str:
    runtime = world.config.models[model].docker
    assert runtime is not None
    return runtime.container


async def test_a_lease_starts_vision_healthy_and_flux_evicts_it_once_released(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    world = demo_worlds()
    async with serve_in_process(world.path, tmp_path / "state") as daemon:
        assert await asyncio.to_thread(world.differences, "cloud-offload") == []
        vision = await daemon.client.post("/leases", json={"model": VISION, "ttl_s": 300})
        assert vision.status_code == 200, vision.text
        lease = vision.json()
        assert container(world, VISION) in await asyncio.to_thread(world.running_containers)
        async with httpx.AsyncClient(timeout=5) as http:  # ready when the lease answers: no polling
            health = await http.get(lease["endpoint"].removesuffix("/v1") + "/health")
        assert health.status_code == 200

        refused = await daemon.client.post("/leases", json={"model": FLUX})
        assert refused.status_code == 503 and f"lease {lease['id']}" in refused.json()["message"]
        assert 0 < int(refused.headers["Retry-After"]) <= 300
        assert container(world, FLUX) not in await asyncio.to_thread(world.running_containers)

        assert (await daemon.client.delete(f"/leases/{lease['id']}")).status_code == 200
        flux = await daemon.client.post("/leases", json={"model": FLUX})
        assert flux.status_code == 200, flux.text
        running = await asyncio.to_thread(world.running_containers)
        assert container(world, FLUX) in running and container(world, VISION) not in running
        assert running - world.expected_containers("cloud-offload") == {container(world, FLUX)}

        status = await daemon.get("/status")
        assert [le["model"] for le in status["leases"]] == [FLUX]
        assert status["drift"] == []
        flux_member = next(m for m in status["members"] if m["name"] == FLUX)
        assert flux_member["state"] == "running"


def test_the_lease_cli_against_a_daemon_process(demo_worlds: WorldFactory, tmp_path: Path) -> None:  # noqa: F811
    world = demo_worlds()
    daemon = start_daemon(tmp_path, config=str(world.path), env_extra=world.env())  # periodic jobs on
    try:
        acquired = daemon.cli("lease", "acquire", VISION, "--ttl", "120", "--json")
        assert acquired.returncode == 0, acquired.stderr
        lease = json.loads(acquired.stdout)
        assert lease["model"] == VISION and 0 < lease["expires_in_s"] <= 120
        assert container(world, VISION) in world.running_containers()

        listed = json.loads(daemon.cli("lease", "list", "--json", check=True).stdout)
        assert [le["id"] for le in listed["leases"]] == [lease["id"]]
        refused = daemon.cli("lease", "acquire", FLUX)
        assert refused.returncode == 1 and refused.stderr.startswith("DaemonError: ")
        assert f"lease {lease['id']}" in refused.stderr

        released = daemon.cli("lease", "release", lease["id"])
        assert released.returncode == 0 and f"released lease {lease['id']}" in released.stdout
        assert json.loads(daemon.cli("lease", "list", "--json", check=True).stdout) == {
            "leases": [],
            "queue": [],
        }
        assert container(world, VISION) in world.running_containers()  # until its idle TTL
        missing = daemon.cli("lease", "release", lease["id"])
        assert missing.returncode == 1 and "no live lease" in missing.stderr
    finally:
        stop_daemon(daemon)
