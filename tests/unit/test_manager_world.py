"""The world the manager tests run in: the bundled four-stack config on a scripted RTX 5090 box,
the in-memory drivers, and a real SQLite store in tmp. Also checks that the fakes behave as the
driver protocols promise (the manager tests trust them)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stackd.config.loader import load_config
from stackd.config.models import Lifecycle, StacksConfig
from stackd.drivers.memory import MemoryContainers, MemoryHealth, MemoryOllama, MemoryProcesses, MemoryRemotes
from stackd.errors import DriverFailed, DriverUnavailable
from stackd.gpu.leases import LeaseCoordinator
from stackd.hardware.types import GpuDevice, HardwareSnapshot
from stackd.manager import ModelStackManager
from stackd.manager.seams import Drivers, ManagerOptions
from stackd.roles import LiveRoles
from stackd.services import Services
from stackd.settings import Settings
from stackd.state.store import StateStore

ROOT = Path(__file__).resolve().parents[2]


def bundled_config() -> StacksConfig:
    # Through the loader, as the daemon reads it: ${VAR:-default} expanded (no environment here).
    return load_config(ROOT / "config" / "model-stacks.yaml", env={})


def rtx5090_32g_workstation() -> HardwareSnapshot:
    """The seed's machine: RTX 5090 with 32 GiB, 3 GiB used by the desktop, 128 GiB of RAM."""
    gpu = GpuDevice(index=0, name="NVIDIA GeForce RTX 5090", total_mib=32607, used_mib=3072, free_mib=29535)
    return HardwareSnapshot(
        gpus=(gpu,),
        ram_total_mib=131072,
        ram_available_mib=120000,
        cpu_count=32,
        gpu_source="scenario:rtx5090",
    )


@dataclass
class World:
    config: StacksConfig
    db: Path
    containers: MemoryContainers = field(default_factory=MemoryContainers)
    processes: MemoryProcesses = field(default_factory=MemoryProcesses)
    ollama: MemoryOllama = field(default_factory=MemoryOllama)
    remotes: MemoryRemotes = field(default_factory=MemoryRemotes)
    health: MemoryHealth = field(default_factory=MemoryHealth)
    hardware: HardwareSnapshot = field(default_factory=rtx5090_32g_workstation)
    now: list[float] = field(default_factory=lambda: [1000.0])
    managers: list[ModelStackManager] = field(default_factory=list)

    def drivers(self) -> Drivers:
        return Drivers(self.containers, self.processes, self.ollama, self.remotes, self.health)

    def manager(self, **options: Any) -> ModelStackManager:
        """A manager as a fresh daemon process builds it: new store handle, new role table;
        ``options`` are ``ManagerOptions`` fields (the clock is the world's)."""
        m = ModelStackManager(
            config=self.config,
            store=StateStore(self.db),
            drivers=self.drivers(),
            live_roles=LiveRoles(),
            read_hardware=lambda: self.hardware,
            options=ManagerOptions(clock=lambda: self.now[0], **options),
        )
        self.managers.append(m)
        return m

    def services(self, manager: ModelStackManager, settings: Settings, token: str, **extra: Any) -> Services:
        """The daemon's services over this world and ``manager`` (what ``stackd serve`` wires),
        with ``extra`` parts (router, leases, ...) where a test needs them."""
        extra.setdefault("leases", LeaseCoordinator(manager))
        return Services(
            settings=settings,
            roles=manager.live_roles,
            manager=manager,
            read_hardware=lambda: self.hardware,
            token=token,
            token_source="test",
            **extra,
        )

    def running_stack(self, stack: str) -> bool:
        """Exactly the always-on members of ``stack`` run, and nothing of other stacks."""
        members = set(self.config.stacks[stack].member_names)
        want_containers, want_tags, want_processes = set(), set(), set()
        for name, m in self.config.models.items():
            if name in members and m.lifecycle == Lifecycle.always_on:
                if m.docker:
                    want_containers.add(m.docker.container)
                if m.ollama:
                    want_tags.add(m.ollama.tag)
                if m.process:
                    want_processes.add(name)
        loaded = set(self.ollama.loaded_tags)
        return (
            self.containers.running_containers == want_containers
            and loaded == want_tags
            and self.processes.running_processes == want_processes
        )

    def describe(self) -> str:
        running, loaded = sorted(self.containers.running_containers), sorted(self.ollama.loaded_tags)
        return f"containers={running} loaded={loaded} processes={sorted(self.processes.running_processes)}"


def make_world(tmp_path: Path, config: StacksConfig | None = None) -> World:
    return World(config=config or bundled_config(), db=tmp_path / "state" / "stackd.db")


async def close_all(world: World) -> None:
    for m in world.managers:
        await m.aclose()
        m.store.close()


# ---------------------------------------------------------------- the fakes keep the protocol's promises


async def test_memory_containers_start_is_idempotent_and_stop_tolerates_a_stopped_container() -> None:
    config = bundled_config()
    orch = config.models["orchestrator-8b"]
    containers = MemoryContainers()
    await containers.ensure_running("orchestrator-8b", orch)
    await containers.ensure_running("orchestrator-8b", orch)
    assert containers.actions == [("start", "orchestrator-8b")]
    assert await containers.running({"orchestrator-8b": orch}) == {"orchestrator-8b"}
    await containers.ensure_stopped("orchestrator-8b", orch)
    await containers.ensure_stopped("orchestrator-8b", orch)
    assert containers.actions == [("start", "orchestrator-8b"), ("stop", "orchestrator-8b")]


async def test_memory_drivers_fail_only_with_driver_errors() -> None:
    config = bundled_config()
    containers = MemoryContainers(down=True)
    with pytest.raises(DriverUnavailable, match="DOCKER_HOST"):
        await containers.running(config.models)
    ollama = MemoryOllama(fail_pull={"llama3.2:3b": 600})
    lines = []
    with pytest.raises(DriverFailed, match="after 500 bytes"):
        async for line in ollama.pull("llama3.2:3b"):
            lines.append(line)
    assert lines[-1].completed == 500 and lines[-1].digest is not None
    assert "llama3.2:3b" not in ollama.tags
    ollama.down = True
    with pytest.raises(DriverUnavailable, match="memory-ollama:11434"):
        await ollama.list_tags()


async def test_memory_ollama_loads_only_pulled_tags_and_reports_cpu_placement() -> None:
    runtime = bundled_config().models["elastic-12b"].ollama
    assert runtime is not None
    ollama = MemoryOllama()
    with pytest.raises(DriverFailed, match="pull"):
        await ollama.load(runtime)
    async for _ in ollama.pull(runtime.tag):
        await asyncio.sleep(0)
    await ollama.load(runtime)
    [loaded] = await ollama.loaded()
    assert loaded.tag == runtime.tag and loaded.size_vram == 0
