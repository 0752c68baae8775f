"""Switching stacks with the in-memory drivers: order, make-before-break, rollback, conflicts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stackd.config.models import Model, StacksConfig
from stackd.drivers.memory import MemoryContainers
from stackd.errors import Conflict, NotFound, PlanRefused
from stackd.manager import ModelStackManager
from stackd.planner import plan_switch
from stackd.planner.plan import Refusal
from stackd.state.store import StateStore
from tests.unit.test_manager_world import World, bundled_config, close_all, make_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path)
    yield w
    await close_all(w)


async def switch(manager: ModelStackManager, stack: str) -> dict[str, Any]:
    handle = await manager.submit_switch(stack)
    await handle.wait()
    return manager.get_switch(handle.id).to_json()  # the JSON the API answers


async def started(world: World, stack: str, **options: Any) -> ModelStackManager:
    """A manager whose ``stack`` is up and committed, with the drivers' logs cleared."""
    manager = world.manager(**options)
    result = await switch(manager, stack)
    assert result["state"] == "succeeded", result["error"]
    world.containers.actions.clear()
    world.ollama.actions.clear()
    return manager


def kinds(events: Sequence[Mapping[str, Any]], type_: str) -> list[str]:
    return [e["step"]["kind"] for e in events if e["type"] == type_]


async def test_a_first_switch_starts_the_stack_binds_every_role_once_and_persists(world: World) -> None:
    manager = world.manager()
    result = await switch(manager, "cloud-offload")
    assert result["state"] == "succeeded" and result["error"] is None
    assert world.running_stack("cloud-offload"), world.describe()
    table = manager.live_roles.current
    assert dict(table.bindings) == world.config.stacks["cloud-offload"].roles
    assert table.stack == "cloud-offload" and table.version == 1  # swapped exactly once
    assert manager.active_stack == "cloud-offload"
    assert StateStore(world.db).active_stack() == "cloud-offload"
    done = [s["kind"] for s in result["steps_done"]]
    assert done.count("roles_swapped") == 1 and done[-1] == "roles_swapped"


def watch_gaps(world: World, manager: ModelStackManager) -> list[str]:
    """After every engine action, note any role bound to an always-on model that is not up."""
    gaps: list[str] = []

    def check(verb: str, name: str) -> None:
        table = manager.live_roles.current
        for role, model in table.bindings.items():
            spec = world.config.models[model]
            if spec.lifecycle.value != "always_on":
                continue
            up = (
                (spec.docker and spec.docker.container in world.containers.running_containers)
                or (spec.ollama and spec.ollama.tag in world.ollama.loaded_tags)
                or spec.remote
            )
            if not up:
                gaps.append(f"after {verb} {name}: {role} -> {model} is not up")
        if table.stack is not None and "orchestrator" not in table.bindings:
            gaps.append(f"after {verb} {name}: orchestrator unbound")

    world.containers.after_action = check
    world.ollama.after_action = check
    return gaps


async def test_roles_move_only_to_models_that_are_up_and_stops_come_after_the_swap(world: World) -> None:
    manager = await started(world, "elastic-hybrid")
    seen_gaps = watch_gaps(world, manager)
    result = await switch(manager, "ollama-only")
    assert result["state"] == "succeeded", result["error"]
    assert seen_gaps == []
    assert world.running_stack("ollama-only"), world.describe()
    assert dict(manager.live_roles.current.bindings) == world.config.stacks["ollama-only"].roles
    types = [(e["type"], e.get("step", {}).get("kind")) for e in result["events"]]
    swap = types.index(("roles_swapped", None))
    first_stop = min(i for i, t in enumerate(types) if t[1] in ("stop_container", "unload_model"))
    last_make = max(
        i
        for i, t in enumerate(types)
        if t[0] == "step_done" and t[1] in ("start_container", "load_model", "probe_remote")
    )
    assert last_make < swap < first_stop
    assert [t for t in types if t[0] == "roles_swapped"] == [("roles_swapped", None)]
    assert ("stop", "orchestrator-8b") in world.containers.actions


def failure_cases() -> list[Any]:
    # (from, to, injection on the world, step expected in the error)
    embed, elastic_12b = "embeddings-nomic", "nemotron-elastic:12b"
    return [
        pytest.param(
            "ollama-only",
            "cloud-offload",
            lambda w: w.containers.fail_start.add(embed),
            "start_container embeddings-nomic",
            id="container start fails",
        ),
        pytest.param(
            "ollama-only",
            "cloud-offload",
            lambda w: w.containers.unhealthy.add(embed),
            "start_container embeddings-nomic",
            id="health check fails",
        ),
        pytest.param(
            "cloud-offload",
            "elastic-hybrid",
            lambda w: w.ollama.fail_pull.update({"nemotron-elastic:9b": 1500}),
            "pull_model elastic-9b",
            id="pull fails half-way",
        ),
        pytest.param(
            "cloud-offload",
            "elastic-hybrid",
            lambda w: setattr(w.ollama, "down", True),
            "pull_model",
            id="ollama down",
        ),
        pytest.param(
            "cloud-offload",
            "elastic-hybrid",
            lambda w: w.ollama.fail_load.add(elastic_12b),
            "load_model elastic-12b",
            id="load fails",
        ),
        pytest.param(
            "cloud-offload",
            "ollama-only",
            lambda w: w.containers.fail_stop.add(embed),
            "stop_container embeddings-nomic",
            id="stop fails after the role swap",
        ),
    ]


@pytest.mark.parametrize(("previous", "target", "inject", "failed_step"), failure_cases())
async def test_a_failed_step_leaves_the_previous_stack_fully_running(
    world: World, previous: str, target: str, inject: Any, failed_step: str
) -> None:
    manager = await started(world, previous)
    roles_before = dict(manager.live_roles.current.bindings)
    inject(world)
    gaps = watch_gaps(world, manager)
    result = await switch(manager, target)
    assert gaps == []
    assert result["state"] == "rolled_back", result
    assert failed_step in result["error"]
    assert f"'{previous}' is running as before" in result["error"]
    assert result["failed_step"] is not None
    assert all(u["ok"] for u in result["undone"])
    world.ollama.down = False
    assert world.running_stack(previous), world.describe()
    assert dict(manager.live_roles.current.bindings) == roles_before
    assert manager.live_roles.current.stack == previous
    assert manager.active_stack == previous and StateStore(world.db).active_stack() == previous
    status = await manager.status()
    assert status["last_switch"]["error"] == result["error"] and status["active_stack"] == previous


async def test_a_pull_that_failed_keeps_the_layers_already_pulled(world: World) -> None:
    manager = await started(world, "cloud-offload")
    world.ollama.fail_pull["nemotron-elastic:9b"] = 1500
    await switch(manager, "elastic-hybrid")
    assert {"nemotron-elastic:6b", "nemotron-elastic:12b"} <= world.ollama.tags
    assert not world.ollama.loaded_tags


def with_required_remote(config: StacksConfig, name: str) -> StacksConfig:
    model: Model = config.models[name]
    assert model.remote is not None
    remote = model.remote.model_copy(update={"required": True})
    models = {**config.models, name: model.model_copy(update={"remote": remote})}
    return config.model_copy(update={"models": models})


async def test_a_required_remote_that_is_down_fails_the_switch(tmp_path: Path) -> None:
    world = make_world(tmp_path, with_required_remote(bundled_config(), "claude-sonnet"))
    try:
        manager = await started(world, "ollama-only")
        world.remotes.down.add("claude-sonnet")
        result = await switch(manager, "cloud-offload")
        assert result["state"] == "rolled_back"
        assert "probe_remote claude-sonnet" in result["error"] and "does not answer" in result["error"]
        assert world.running_stack("ollama-only"), world.describe()
        assert manager.live_roles.current.stack == "ollama-only"
    finally:
        await close_all(world)


async def test_an_optional_remote_that_is_down_degrades_the_stack(world: World) -> None:
    world.remotes.down.add("gemini-flash")
    manager = world.manager()
    result = await switch(manager, "cloud-offload")
    assert result["state"] == "succeeded"
    assert [d["model"] for d in result["degraded"]] == ["gemini-flash"]
    assert "degraded" in [e["type"] for e in result["events"]]
    status = await manager.status()
    assert status["degraded"][0]["model"] == "gemini-flash"
    [gemini] = [m for m in status["members"] if m["name"] == "gemini-flash"]
    assert gemini["state"] == "degraded" and "does not answer" in gemini["detail"]


class GatedContainers(MemoryContainers):
    """Starts wait for ``gate``: lets a test hold a switch in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def ensure_running(self, name: str, model: Model) -> None:
        self.waiting.set()
        await self.gate.wait()
        await super().ensure_running(name, model)


async def test_a_second_switch_while_one_runs_is_a_conflict_naming_the_first(world: World) -> None:
    world.containers = GatedContainers()
    manager = world.manager()
    handle = await manager.submit_switch("cloud-offload")
    await world.containers.waiting.wait()
    with pytest.raises(Conflict) as err:
        await manager.submit_switch("ollama-only")
    assert handle.id in err.value.message and "cloud-offload" in err.value.message
    assert err.value.detail == {"switch_id": handle.id, "stack": "cloud-offload"}
    assert manager.get_switch(handle.id).state == "running"
    assert (await manager.status())["switch_in_progress"]["switch_id"] == handle.id
    world.containers.gate.set()
    assert await handle.wait() == "succeeded"
    assert (await switch(manager, "ollama-only"))["state"] == "succeeded"


async def test_switching_to_the_active_stack_restarts_a_dead_member(world: World) -> None:
    manager = await started(world, "cloud-offload")
    version = manager.live_roles.current.version
    world.containers.running_containers.discard("aether-embeddings")
    status = await manager.status()
    assert any("embeddings-nomic" in d for d in status["drift"])
    result = await switch(manager, "cloud-offload")
    assert result["state"] == "succeeded"
    assert world.containers.actions == [("start", "embeddings-nomic")]
    assert world.running_stack("cloud-offload")
    assert manager.live_roles.current.version == version  # the table did not change
    assert (await manager.status())["drift"] == []


async def test_events_replay_then_follow_and_end_with_finished(world: World) -> None:
    manager = await started(world, "cloud-offload")
    world.ollama.chunk_bytes = 100
    handle = await manager.submit_switch("elastic-hybrid")
    live = [e async for e in manager.events(handle.id)]
    await handle.wait()
    replayed = [e async for e in manager.events(handle.id)]
    assert live == replayed
    assert [e["seq"] for e in live] == list(range(len(live)))
    assert live[0]["type"] == "step_started"
    assert (live[-1]["type"], live[-1]["state"]) == ("finished", "succeeded")
    pulls = [e for e in live if e["type"] == "pull_progress"]
    assert {e["tag"] for e in pulls} == {"nemotron-elastic:6b", "nemotron-elastic:9b", "nemotron-elastic:12b"}
    layer = [e for e in pulls if e["tag"] == "nemotron-elastic:6b" and e["digest"]]
    assert layer[-1]["completed"] == layer[-1]["total"] == world.ollama.layer_bytes
    for step in kinds(live, "step_done"):
        assert step in ("pull_model", "load_model", "probe_remote", "bind_role", "unbind_role")


async def test_a_refused_plan_changes_nothing_and_holds_no_slot(world: World) -> None:
    real = plan_switch

    def refusing(config: Any, observed: Any, target: str, hardware: Any) -> Any:
        plan = real(config, observed, target, hardware)
        if target != "elastic-hybrid":
            return plan
        refusal = Refusal("vram", "elastic-12b needs 24 GiB, 15 GiB free")
        return replace(plan, feasible=False, refusals=(refusal,))

    manager = await started(world, "cloud-offload", planner=refusing)
    with pytest.raises(PlanRefused) as err:
        await manager.submit_switch("elastic-hybrid")
    assert "24 GiB" in err.value.message and err.value.detail["plan"]["feasible"] is False
    assert world.running_stack("cloud-offload") and world.containers.actions == []
    assert manager.current_switch is None
    assert (await switch(manager, "ollama-only"))["state"] == "succeeded"


async def test_unknown_names_are_not_found(world: World) -> None:
    manager = world.manager()
    with pytest.raises(NotFound, match="valid stacks: cloud-offload"):
        await manager.submit_switch("nope")
    with pytest.raises(NotFound):
        await manager.plan("nope")
    with pytest.raises(NotFound):
        manager.get_switch("abc")
    with pytest.raises(NotFound):
        manager.events("abc")


async def test_a_dry_run_plans_without_changing_anything(world: World) -> None:
    manager = world.manager()
    handle = await manager.submit_switch("cloud-offload", dry_run=True)
    assert handle.dry_run and handle.plan.stack == "cloud-offload" and handle.plan.steps
    assert await handle.wait() is None
    assert world.containers.actions == [] and manager.active_stack is None


async def test_a_new_manager_on_the_same_file_knows_the_stack_and_the_switch(world: World) -> None:
    first = await started(world, "elastic-hybrid")
    [switch_id] = list(first.worker.switches)
    second = world.manager()
    assert second.active_stack == "elastic-hybrid"
    old = second.get_switch(switch_id)
    assert old.state == "succeeded" and old.stack == "elastic-hybrid" and old.steps_done
    assert old.journal_state == "committed"  # a journal switch says its journal state
    assert [e["type"] async for e in second.events(switch_id)] == ["finished"]
    assert (await second.status())["last_switch"]["switch_id"] == switch_id


async def test_status_reports_members_roles_and_ledgers(world: World) -> None:
    manager = await started(world, "elastic-hybrid")
    status = await manager.status()
    states = {m["name"]: m["state"] for m in status["members"]}
    assert states["orchestrator-8b"] == "running"
    assert states["vision-qwen25vl"] == "stopped"  # on demand
    assert states["elastic-12b"] == "loaded"
    assert states["elastic-9b"] == "pulled"
    assert status["roles"]["orchestrator"] == "orchestrator-8b"
    assert status["engines"] == {"docker": "ok", "ollama": "ok"}
    assert status["gpu"]["devices"][0]["total_mib"] == 32607
    assert status["ram"] is not None
    world.ollama.down = True
    status = await manager.status()
    assert status["engines"]["ollama"].startswith("cannot reach Ollama")
    assert {m["name"]: m["state"] for m in status["members"]}["elastic-12b"] == "unknown"


async def test_two_submits_in_the_same_instant_get_one_switch_and_one_conflict(world: World) -> None:
    manager = world.manager()
    results = await asyncio.gather(
        manager.submit_switch("cloud-offload"), manager.submit_switch("ollama-only"), return_exceptions=True
    )
    handle, conflict = results
    assert not isinstance(handle, BaseException) and isinstance(conflict, Conflict)
    assert handle.id in conflict.message
    assert await handle.wait() == "succeeded"


async def test_an_undo_that_fails_is_reported_and_the_drift_shows_in_status(world: World) -> None:
    manager = await started(world, "ollama-only")
    world.containers.fail_start.add("embeddings-nomic")
    world.containers.fail_stop.add("orchestrator-8b")
    result = await switch(manager, "cloud-offload")
    assert result["state"] == "failed"
    assert "undo failed" in result["error"] and "could not be undone" in result["error"]
    # The failed start itself is compensated first (a stop: fine), then the orchestrator's start.
    assert [(u["step"]["model"], u["ok"]) for u in result["undone"]] == [
        ("embeddings-nomic", True),
        ("orchestrator-8b", False),
    ]
    assert manager.live_roles.current.stack == "ollama-only"
    assert StateStore(world.db).get_switch(result["switch_id"]).state == "failed"  # type: ignore[union-attr]
    status = await manager.status()
    assert "orchestrator-8b: running but not a member of 'ollama-only'" in status["drift"]


# ---------------------------------------------------------------- process members (runtime: process)


async def test_a_switch_between_process_stacks_starts_the_new_engine_before_it_stops_the_old(
    world: World,
) -> None:
    manager = await started(world, "embedded")
    first_pid = world.processes.pids["smollm2-135m"]
    result = await switch(manager, "embedded-long")
    assert result["state"] == "succeeded", result["error"]
    done = [(s["kind"], s.get("model") or s.get("role")) for s in result["steps_done"]]
    start, stop = (
        done.index(("start_process", "smollm2-135m-long")),
        done.index(("stop_process", "smollm2-135m")),
    )
    swap = done.index(("roles_swapped", None))
    assert start < swap < stop  # make-before-break: the orchestrator is never without an engine
    assert world.processes.running_processes == {"smollm2-135m-long"}
    assert world.processes.pids["smollm2-135m-long"] != first_pid
    assert manager.live_roles.current.bindings["orchestrator"] == "smollm2-135m-long"


async def test_a_process_member_that_fails_to_start_rolls_back_and_the_old_engine_keeps_running(
    world: World,
) -> None:
    manager = await started(world, "embedded")
    world.processes.fail_start.add("smollm2-135m-long")
    result = await switch(manager, "embedded-long")
    assert result["state"] == "rolled_back"
    assert "start_process smollm2-135m-long failed" in result["error"]
    assert "exited with code 1 before it was ready" in result["error"]
    assert world.processes.running_processes == {"smollm2-135m"}
    assert world.processes.actions == [("start", "smollm2-135m")]  # the old engine was never touched
    assert manager.active_stack == "embedded"
    assert manager.live_roles.current.bindings["orchestrator"] == "smollm2-135m"


async def test_status_shows_a_process_member_with_its_pid_and_measured_memory(world: World) -> None:
    manager = await started(world, "embedded")
    world.processes.rss_mib["smollm2-135m"] = 300
    status = await manager.status()
    [engine] = [m for m in status["members"] if m["name"] == "smollm2-135m"]
    assert engine["state"] == "running" and engine["process"]["pid"] == world.processes.pids["smollm2-135m"]
    assert (engine["memory_mib"], engine["measured_mib"]) == (410, 300)  # memory_gb 0.4
    [item] = [i for i in status["ram"]["items"] if i["model"] == "smollm2-135m"]
    assert (item["mib"], item["measured_mib"]) == (410, 300)  # the ledger shows both, side by side


def test_a_gpu_process_member_is_measured_through_nvml_per_process(world: World) -> None:
    from stackd.drivers.base import ProcessInfo
    from stackd.hardware.types import GpuDevice, GpuProcess, HardwareSnapshot
    from stackd.manager.observe import Observation, with_measurements
    from stackd.planner.plan import ObservedState

    config = world.config.model_copy(
        update={
            "models": {
                **world.config.models,
                "smollm2-135m": world.config.models["smollm2-135m"].model_copy(update={"placement": "gpu"}),
            }
        }
    )
    info = ProcessInfo(
        model="smollm2-135m",
        state="ready",
        pid=100,
        port=1,
        endpoint=None,
        started_at=None,
        restarts=0,
        exits=0,
        last_exit=None,
        log_path=None,
        pids=(100, 101),
        rss_mib=600,
    )
    gpu = GpuDevice(
        0,
        "RTX 5090",
        32607,
        9000,
        23607,
        processes=(
            GpuProcess(100, "python", 300),
            GpuProcess(101, "python", 1200),
            GpuProcess(7, "Xorg", 3000),
        ),
    )
    hardware = HardwareSnapshot((gpu,), 131072, 120000, 32, "scenario:test")
    observed = Observation(ObservedState(running_processes=frozenset({"smollm2-135m"})), processes=(info,))
    measured = with_measurements(observed, config, hardware).state.measured_mib
    assert measured == {"smollm2-135m": 1500}  # its two processes on the card, not Xorg, not its RSS
