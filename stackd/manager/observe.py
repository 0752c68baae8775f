"""Reading what really runs, and comparing it with what a stack needs.

``observe_engines`` asks Docker and Ollama at the same time. An engine that does not answer is
not an exception here: its part of the observation is empty and ``problems`` says why, so that
status and recovery can report it (and a switch fails on the first step that needs it, with the
driver's message naming DOCKER_HOST or the URL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from stackd.config.models import Lifecycle, Runtime, StacksConfig
from stackd.drivers.base import ContainerDriver, LoadedModel, OllamaDriver
from stackd.errors import DriverFailed, DriverUnavailable
from stackd.plan import ObservedState
from stackd.planner.members import is_up

T = TypeVar("T")


@dataclass(frozen=True)
class Observation:
    state: ObservedState
    problems: Mapping[str, str] = field(default_factory=dict)  # engine ("docker", "ollama") -> why unknown
    loaded: tuple[LoadedModel, ...] = ()


async def observe_engines(config: StacksConfig, containers: ContainerDriver, ollama: OllamaDriver,
                          bindings: Mapping[str, str], active: str | None) -> Observation:
    docker_models = {name: m for name, m in config.models.items() if m.runtime == Runtime.docker}
    uses_ollama = any(m.runtime == Runtime.ollama for m in config.models.values())
    running, tags, loaded = await asyncio.gather(
        _answer(containers.running(docker_models)) if docker_models else _nothing(frozenset()),
        _answer(ollama.list_tags()) if uses_ollama else _nothing(frozenset()),
        _answer(ollama.loaded()) if uses_ollama else _nothing([]),
    )
    problems: dict[str, str] = {}
    if isinstance(running, Exception):
        problems["docker"] = str(running)
        running = frozenset()
    if isinstance(tags, Exception) or isinstance(loaded, Exception):
        problems["ollama"] = str(tags if isinstance(tags, Exception) else loaded)
        tags, loaded = frozenset(), []
    state = ObservedState(
        active_stack=active,
        running_containers=frozenset(running),
        pulled_tags=frozenset(tags),
        loaded_tags=frozenset(m.tag for m in loaded),
        bindings=dict(bindings),
    )
    return Observation(state=state, problems=problems, loaded=tuple(loaded))


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
            docker = model.runtime == Runtime.docker
            what = "container is not running" if docker else "is not loaded in Ollama"
            out.append(f"{name}: {what}")
    return out


def drift(config: StacksConfig, stack: str, observation: Observation) -> list[str]:
    """Every way what runs differs from ``stack``: engines that cannot be read, members missing,
    and declared models running although ``stack`` does not have them."""
    out = [f"{engine}: {why}" for engine, why in observation.problems.items()]
    out += missing_members(config, stack, observation.state)
    out += [f"{name}: running but not a member of '{stack}'"
            for name in extra_members(config, stack, observation)]
    return out


def extra_members(config: StacksConfig, stack: str, observation: Observation) -> list[str]:
    members = set(config.stacks[stack].member_names)
    out = []
    for name, model in config.models.items():
        if name in members:
            continue
        running = model.runtime == Runtime.docker and name in observation.state.running_containers
        loaded = model.ollama is not None and model.ollama.tag in observation.state.loaded_tags
        if running or loaded:
            out.append(name)
    return out
