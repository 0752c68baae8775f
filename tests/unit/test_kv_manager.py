"""The KV planner through the manager: a switch starts a vLLM member with the computed
``${GPU_MEMORY_UTILIZATION}``, and ``/status`` shows the active stack's KV table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stackd.config.models import Model
from stackd.drivers.memory import MemoryContainers
from tests.unit.conftest_planner import fixed
from tests.unit.test_kv_planner import seed_config
from tests.unit.test_manager_world import World, close_all


class RecordingContainers(MemoryContainers):
    """The in-memory docker driver, keeping the model each start was given."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, Model] = {}

    async def ensure_running(self, name: str, model: Model) -> None:
        self.started[name] = model
        await super().ensure_running(name, model)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(
        config=seed_config(False),
        db=tmp_path / "state" / "stackd.db",
        containers=RecordingContainers(),
        hardware=fixed(32),
    )
    yield w
    await close_all(w)


async def test_a_switch_fills_the_utilization_and_status_shows_the_table(world: World) -> None:
    manager = world.manager()
    handle = await manager.submit_switch("s")
    await handle.wait()
    assert manager.get_switch(handle.id).state == "succeeded"
    assert isinstance(world.containers, RecordingContainers)
    spec = world.containers.started["orchestrator-8b"].docker.spec  # type: ignore[union-attr]
    assert spec is not None and spec.command == ["--gpu-memory-utilization", "0.45"]
    # The config itself still says the macro: a later plan computes it again.
    config_docker = manager.config.models["orchestrator-8b"].docker
    assert config_docker is not None
    config_spec = config_docker.spec
    assert config_spec is not None and config_spec.command == [
        "--gpu-memory-utilization",
        "${GPU_MEMORY_UTILIZATION}",
    ]
    status = await manager.status()
    (row,) = status["gpu"]["kv"]
    assert row["model"] == "orchestrator-8b" and row["gpu_memory_utilization"] == 0.45
    assert row["kv_tokens"] == 72_974 and not row["refused"]
