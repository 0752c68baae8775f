"""Reading what really runs, and comparing it with what a stack needs.

``observe_engines`` asks Docker and Ollama at the same time. An engine that does not answer is
not an exception here: its part of the observation is empty and ``problems`` says why, so that
status and recovery can report it (and a switch fails on the first step that needs it, with the
driver's message naming DOCKER_HOST or the URL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from stackd.config.models import Lifecycle, Placement, Runtime, StacksConfig
from stackd.drivers.base import ContainerDriver, LoadedModel, OllamaDriver, ProcessDriver, ProcessInfo
from stackd.drivers.cluster import ClusterReader
from stackd.errors import DriverFailed, DriverUnavailable
from stackd.hardware.types import HardwareSnapshot
from stackd.manager.cluster_view import observe_cluster
from stackd.planner.members import is_up
from stackd.planner.plan import ObservedState

T = TypeVar("T")


@dataclass(frozen=True)
class Observation:
    state: ObservedState
    problems: Mapping[str, str] = field(default_factory=dict)  # engine ("docker", "ollama") -> why unknown
    loaded: tuple[LoadedModel, ...] = ()
    processes: tuple[ProcessInfo, ...] = ()

    def process(self, model: str) -> ProcessInfo | None:
        return next((p for p in self.processes if p.model == model), None)


async def observe_engines(
    config: StacksConfig,
    containers: ContainerDriver,
    ollama: OllamaDriver,
    bindings: Mapping[str, str],
    active: str | None,
    processes: ProcessDriver,
) -> Observation:
    docker_models = {name: m for name, m in config.models.items() if m.runtime == Runtime.docker}
    process_models = {name: m for name, m in config.models.items() if m.runtime == Runtime.process}
    uses_ollama = any(m.runtime == Runtime.ollama for m in config.models.values())
    reader = containers if isinstance(containers, ClusterReader) and config.cluster is not None else None
    live, running, tags, loaded, cluster = await asyncio.gather(
        processes.running(process_models) if process_models else _nothing(frozenset[str]()),
        _answer(containers.running(docker_models)) if docker_models else _nothing(frozenset()),
        _answer(ollama.list_tags()) if uses_ollama else _nothing(frozenset()),
        _answer(ollama.loaded()) if uses_ollama else _nothing([]),
        observe_cluster(reader, config.cluster, docker_models)
        if reader and config.cluster
        else _nothing(None),
    )
    problems: dict[str, str] = {}
    if isinstance(running, Exception):
        problems["docker"] = str(running)
        running = frozenset()
    if isinstance(tags, Exception) or isinstance(loaded, Exception):
        problems["ollama"] = str(tags if isinstance(tags, Exception) else loaded)
        tags, loaded = frozenset(), []
    # Every member the driver knows, dead ones too: status tells a dead engine from a stopped one.
    infos = tuple(p for p in processes.processes() if p.model in process_models)
    state = ObservedState(
        active_stack=active,
        running_containers=frozenset(running),
        running_processes=frozenset(live),
        pulled_tags=frozenset(tags),
        loaded_tags=frozenset(m.tag for m in loaded),
        bindings=dict(bindings),
        cluster=cluster,
    )
    return Observation(state=state, problems=problems, loaded=tuple(loaded), processes=infos)


def with_measurements(
    observation: Observation,
    config: StacksConfig,
    hardware: HardwareSnapshot,
    remembered: Mapping[str, int] | None = None,
) -> Observation:
    """The observation with ``measured_mib`` filled for the process members that run: the RSS of
    the engine's process tree for a CPU member; for a GPU member, NVML's used memory of the
    processes of that tree on the budgeted card. ``remembered`` (model -> the largest MiB measured
    under its current config, from the state store) becomes ``footprint_mib``."""
    device = hardware.gpu(config.gpu.device)
    gpu_use = {p.pid: p.used_mib for p in device.processes} if device else {}
    measured: dict[str, int] = {}
    for info in observation.processes:
        model = config.models.get(info.model)
        if model is None:
            continue
        if model.placement == Placement.gpu:
            held = [gpu_use[pid] for pid in info.pids if pid in gpu_use]
            if held:
                measured[info.model] = sum(held)
        elif info.rss_mib is not None:
            measured[info.model] = info.rss_mib
    state = replace(observation.state, measured_mib=measured, footprint_mib=dict(remembered or {}))
    return replace(observation, state=state)


async def _answer(call: Awaitable[T]) -> T | Exception:
    try:
        return await call
    except (DriverUnavailable, DriverFailed) as exc:
        return exc


async def _nothing(value: T) -> T:
    return value


def missing_members(config: StacksConfig, stack: str, observed: ObservedState) -> list[str]:
    """Sentences for each member the stack needs up that is not: always-on members not running
    or not loaded, and Ollama tags not pulled (on-demand members are started by a lease)."""
    out: list[str] = []
    for name in config.stacks[stack].member_names:
        model = config.models[name]
        if model.ollama is not None and model.ollama.tag not in observed.pulled_tags:
            out.append(f"{name}: Ollama tag {model.ollama.tag} is not pulled")
        elif model.lifecycle == Lifecycle.always_on and not is_up(name, model, observed):
            what = {
                Runtime.docker: "container is not running",
                Runtime.process: "engine process is not running",
            }.get(model.runtime, "is not loaded in Ollama")
            out.append(f"{name}: {what}")
    return out


def drift(
    config: StacksConfig, stack: str, observation: Observation, involved: tuple[str | None, ...] = ()
) -> list[str]:
    """Every way what runs differs from ``stack``: engines that cannot be read, members missing,
    and declared models running although ``stack`` does not have them.

    An engine that cannot be read counts when ``stack`` or an ``involved`` stack (both sides of
    an interrupted switch) has members on it: then something may run there unseen. A laptop
    without Docker running a stack without containers has no drift."""
    stacks = [s for s in (stack, *involved) if s in config.stacks]
    used = {config.models[n].runtime.value for s in stacks for n in config.stacks[s].member_names}
    out = [f"{engine}: {why}" for engine, why in observation.problems.items() if engine in used]
    out += missing_members(config, stack, observation.state)
    out += [
        f"{name}: running but not a member of '{stack}'" for name in extra_members(config, stack, observation)
    ]
    return out


def extra_members(config: StacksConfig, stack: str, observation: Observation) -> list[str]:
    members = set(config.stacks[stack].member_names)
    out = []
    for name, model in config.models.items():
        if name in members:
            continue
        running = (model.runtime == Runtime.docker and name in observation.state.running_containers) or (
            model.runtime == Runtime.process and name in observation.state.running_processes
        )
        loaded = model.ollama is not None and model.ollama.tag in observation.state.loaded_tags
        if running or loaded:
            out.append(name)
    return out
