"""Replaying a plan on paper: GPU residents, VRAM in use and the role table after every step.

The planner uses these to choose a safe order; the property tests use them to check it. They
follow the same notion of "up" as the drivers' observation (``members.is_up``).
"""

from __future__ import annotations

from collections.abc import Iterable

from stackd.config.models import StacksConfig
from stackd.planner.members import is_gpu, is_up
from stackd.planner.plan import (
    BindRole,
    LoadModel,
    ObservedState,
    Plan,
    StartContainer,
    StartProcess,
    Step,
    StopContainer,
    StopProcess,
    UnbindRole,
    UnloadModel,
)


def initial_gpu_residents(config: StacksConfig, observed: ObservedState) -> frozenset[str]:
    """stackd's GPU members that are up before the first step."""
    return frozenset(n for n, m in config.models.items() if is_gpu(m) and is_up(n, m, observed))


def gpu_residents_after_each_step(
    steps: Iterable[Step], config: StacksConfig, observed: ObservedState
) -> list[frozenset[str]]:
    """stackd's GPU members that are up after each step (one set per step)."""
    resident = set(initial_gpu_residents(config, observed))
    out: list[frozenset[str]] = []
    for step in steps:
        match step:
            case StartContainer(model=name) | StartProcess(model=name) | LoadModel(model=name):
                if name in config.models and is_gpu(config.models[name]):
                    resident.add(name)
            case StopContainer(model=name) | StopProcess(model=name) | UnloadModel(model=name):
                resident.discard(name)
            case _:
                pass
        out.append(frozenset(resident))
    return out


def vram_in_use(residents: frozenset[str], config: StacksConfig) -> int:
    return sum(config.models[name].memory_mib for name in residents)


def simulate_vram(plan: Plan, config: StacksConfig, observed: ObservedState) -> list[int]:
    """MiB of VRAM that stackd's members hold after each step of ``plan`` (foreign use excluded)."""
    return [vram_in_use(r, config) for r in gpu_residents_after_each_step(plan.steps, config, observed)]


def bindings_after_each_step(plan: Plan, observed: ObservedState) -> list[dict[str, str]]:
    """The role table (role -> model) after each step of ``plan``, starting from ``observed.bindings``."""
    table = dict(observed.bindings)
    out: list[dict[str, str]] = []
    for step in plan.steps:
        match step:
            case BindRole(role=role, model=model):
                table[role] = model
            case UnbindRole(role=role):
                table.pop(role, None)
            case _:
                pass
        out.append(dict(table))
    return out


def first_overflow(
    steps: tuple[Step, ...], config: StacksConfig, observed: ObservedState, limit_mib: int
) -> int | None:
    """Index of the first step that raises stackd's VRAM above ``limit_mib``, or None."""
    before = vram_in_use(initial_gpu_residents(config, observed), config)
    for index, residents in enumerate(gpu_residents_after_each_step(steps, config, observed)):
        after = vram_in_use(residents, config)
        if after > before and after > limit_mib:
            return index
        before = after
    return None
