"""The daemon's HTTP API over in-memory drivers: auth, 404, 409, 422, switching, persistence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackd.api.app import create_app
from stackd.config.models import Model
from stackd.drivers.memory import MemoryContainers
from stackd.settings import Settings
from tests.unit.test_manager_world import World, make_world

TOKEN = "test-token-0123456789"
BUNDLED_TEXT = (Path(__file__).resolve().parents[2] / "config" / "model-stacks.yaml").read_text()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class GatedContainers(MemoryContainers):
    """Containers whose start waits for the test to open the gate (a switch in progress)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def ensure_running(self, name: str, model: Model) -> None:
        await self.gate.wait()
        await super().ensure_running(name, model)


@dataclass
class Daemon:
    world: World
    client: httpx.AsyncClient


async def start(world: World, tmp_path: Path) -> Daemon:
    manager = world.manager()
    await manager.recover()
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN)
    app = create_app(services)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stackd")
    return Daemon(world, client)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    world = make_world(tmp_path)
    world.containers = GatedContainers()
    d = await start(world, tmp_path)
    yield d
    await d.client.aclose()
    for m in world.managers:
        await m.aclose()
        m.store.close()


async def test_lists_stacks_and_the_active_one(daemon: Daemon) -> None:
    body = (await daemon.client.get("/model-stacks")).json()
    assert body["active"] == "cloud-offload"
    assert [s["name"] for s in body["stacks"]] == [
        "cloud-offload",
        "elastic-hybrid",
        "ollama-hybrid",
        "ollama-only",
        "embedded",
        "embedded-long",
    ]


async def test_switch_without_or_with_a_wrong_token_is_401(daemon: Daemon) -> None:
    body = {"stack": "elastic-hybrid"}
    assert (await daemon.client.post("/model-stacks/switch", json=body)).status_code == 401
    wrong = await daemon.client.post(
        "/model-stacks/switch", json=body, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert daemon.world.containers.running_containers == {"aether-orchestrator", "aether-embeddings"}


async def test_unknown_stack_is_404_naming_the_valid_ones(daemon: Daemon) -> None:
    resp = await daemon.client.post("/model-stacks/switch", json={"stack": "nope"}, headers=AUTH)
    assert resp.status_code == 404
    assert "elastic-hybrid" in resp.json()["message"]
    assert (await daemon.client.get("/model-stacks/nope")).status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [({}, "stack"), ({"stack": "x", "dry_run": "maybe"}, "dry_run"), ({"stack": "x", "colour": 1}, "colour")],
)
async def test_malformed_body_is_422_naming_the_field(
    daemon: Daemon, body: dict[str, Any], field: str
) -> None:
    resp = await daemon.client.post("/model-stacks/switch", json=body, headers=AUTH)
    assert resp.status_code == 422
    assert field in resp.json()["message"]


async def test_a_switch_while_another_runs_is_409_naming_it(daemon: Daemon) -> None:
    containers = daemon.world.containers
    assert isinstance(containers, GatedContainers)
    containers.gate.clear()
    first = await daemon.client.post(
        "/model-stacks/switch", json={"stack": "ollama-only", "wait": False}, headers=AUTH
    )
    assert first.status_code == 202
    switch_id = first.json()["switch_id"]
    second = await daemon.client.post("/model-stacks/switch", json={"stack": "elastic-hybrid"}, headers=AUTH)
    assert second.status_code == 409
    assert switch_id in second.json()["message"]
    containers.gate.set()
    for _ in range(200):
        state = (await daemon.client.get(f"/model-stacks/switch/{switch_id}")).json()["state"]
        if state not in ("pending", "running"):
            break
        await asyncio.sleep(0.01)
    assert state == "succeeded"


async def test_switch_rebinds_roles_and_reports_the_result(daemon: Daemon) -> None:
    resp = await daemon.client.post("/model-stacks/switch", json={"stack": "ollama-only"}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "succeeded"
    role = (await daemon.client.get("/roles/orchestrator")).json()
    assert role["model"] == "orchestrator-cpu" and role["placement"] == "cpu"
    assert daemon.world.containers.running_containers == set()
    assert (await daemon.client.get("/roles/vision")).status_code == 404


async def test_dry_run_changes_nothing(daemon: Daemon) -> None:
    before = set(daemon.world.containers.running_containers)
    resp = await daemon.client.post(
        "/model-stacks/switch", json={"stack": "ollama-only", "dry_run": True}, headers=AUTH
    )
    assert resp.status_code == 200 and resp.json()["plan"]["steps"]
    assert daemon.world.containers.running_containers == before
    assert (await daemon.client.get("/model-stacks")).json()["active"] == "cloud-offload"


async def test_active_stack_persists_across_a_restart(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    first = await start(world, tmp_path)
    resp = await first.client.post("/model-stacks/switch", json={"stack": "elastic-hybrid"}, headers=AUTH)
    assert resp.json()["state"] == "succeeded"
    await first.client.aclose()
    for m in world.managers:
        await m.aclose()
        m.store.close()
    second = await start(world, tmp_path)  # a new process: new store handle, new role table
    assert (await second.client.get("/model-stacks")).json()["active"] == "elastic-hybrid"
    assert (await second.client.get("/roles/reasoning")).json()["model"] == "elastic-12b"
    await second.client.aclose()
    for m in world.managers[1:]:
        await m.aclose()
        m.store.close()


async def test_status_never_shows_a_secret(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "sk-very-secret-value")
    for path in ("/status", "/model-stacks/cloud-offload", "/roles", "/model-stacks"):
        text = (await daemon.client.get(path)).text
        assert "sk-very-secret-value" not in text
    assert "GEMINI_API_KEY" in (await daemon.client.get("/model-stacks/cloud-offload")).text


async def test_config_reload_refuses_a_bad_file_and_keeps_the_running_config(tmp_path: Path) -> None:
    from stackd.config.loader import load_config

    world = make_world(tmp_path)
    path = tmp_path / "stacks.yaml"
    bundled = BUNDLED_TEXT
    path.write_text(bundled)
    manager = world.manager()
    await manager.recover()
    services = world.services(manager, Settings(state_dir=tmp_path / "state", config=path), TOKEN)
    app = create_app(services, load_config=lambda: load_config(path, env={}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stackd") as client:
        path.write_text(bundled.replace("orchestrator: orchestrator-8b", "orchestrator: orchestrator-9b"))
        bad = await client.post("/config/reload", headers=AUTH)
        assert bad.status_code == 422
        assert any("orchestrator-9b" in p and "stacks.yaml:" in p for p in bad.json()["problems"])
        assert services.config is world.config and manager.config is world.config
        assert (await client.get("/model-stacks")).json()["active"] == "cloud-offload"

        path.write_text(
            bundled.replace(
                "description: Orchestrator and embeddings on the GPU", "description: Reloaded description"
            )
        )
        good = await client.post("/config/reload", headers=AUTH)
        assert good.status_code == 200, good.text
        assert manager.config is services.config is not world.config
        stacks = (await client.get("/model-stacks")).json()["stacks"]
        assert stacks[0]["description"].startswith("Reloaded description")
    await manager.aclose()
    manager.store.close()


async def test_roles_advertise_what_the_prober_requests_and_the_verdict_status_shows(tmp_path: Path) -> None:
    """/roles names the URL the remote prober really requests (Anthropic's /v1/models, Gemini's
    /v1beta/models, not endpoint + /models) and the health verdict /status shows for the member."""
    world = make_world(tmp_path)
    stack = world.config.stacks["cloud-offload"]
    roles = {**stack.roles, "research": "claude-sonnet", "reasoning": "gemini-flash"}
    stacks = {**world.config.stacks, "cloud-offload": stack.model_copy(update={"roles": roles})}
    world.config = world.config.model_copy(update={"stacks": stacks})
    d = await start(world, tmp_path)
    try:
        rows = {r["role"]: r for r in (await d.client.get("/roles", headers=AUTH)).json()["roles"]}
        assert rows["research"]["health_url"] == "https://api.anthropic.com/v1/models"
        assert rows["reasoning"]["health_url"] == "https://generativelanguage.googleapis.com/v1beta/models"
        assert rows["research"]["health"] == "ok"  # the switch's own probe answered
        manager = world.managers[0]
        manager.record_probe("claude-sonnet", False, "HTTP 529 overloaded")
        rows = {r["role"]: r for r in (await d.client.get("/roles", headers=AUTH)).json()["roles"]}
        members = {m["name"]: m for m in (await d.client.get("/status", headers=AUTH)).json()["members"]}
        assert rows["research"]["health"] == "degraded" == members["claude-sonnet"]["state"]
        assert members["claude-sonnet"]["detail"] == "HTTP 529 overloaded"
        assert manager.unavailable("claude-sonnet") is None  # a remote is still tried: the chain moves on
    finally:
        await d.client.aclose()
        for m in world.managers:
            await m.aclose()
            m.store.close()


class StopGatedContainers(GatedContainers):
    """Containers whose stop waits for the test: a switch holds between its two stacks."""

    def __init__(self) -> None:
        super().__init__()
        self.stop_gate = asyncio.Event()

    async def ensure_stopped(self, name: str, model: Model) -> None:
        await self.stop_gate.wait()
        await super().ensure_stopped(name, model)


async def test_no_drift_is_reported_while_a_switch_runs_between_its_stacks(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.containers = containers = StopGatedContainers()
    daemon = await start(world, tmp_path)
    try:
        first = await daemon.client.post(
            "/model-stacks/switch", json={"stack": "ollama-only", "wait": False}, headers=AUTH
        )
        switch_id = first.json()["switch_id"]
        for _ in range(500):  # until the new stack's members run beside the old ones
            status = (await daemon.client.get("/status")).json()
            if world.ollama.loaded_tags and status["switch_in_progress"]:
                break
            await asyncio.sleep(0.01)
        assert (
            status["active_stack"] == "cloud-offload"
            and status["switch_in_progress"]["stack"] == "ollama-only"
        )
        assert status["drift"] == []  # not "orchestrator-cpu: running but not a member of 'cloud-offload'"
        containers.stop_gate.set()
        for _ in range(500):
            state = (await daemon.client.get(f"/model-stacks/switch/{switch_id}")).json()["state"]
            if state not in ("pending", "running"):
                break
            await asyncio.sleep(0.01)
        assert state == "succeeded"
        assert (await daemon.client.get("/status")).json()["drift"] == []
    finally:
        await daemon.client.aclose()
        for m in world.managers:
            await m.aclose()
            m.store.close()
