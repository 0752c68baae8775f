"""Invariants of plan_switch over random configs, random observed states and random machines.

For every feasible plan, replayed step by step with an oracle written here (not the planner's):
* no start puts stackd's VRAM above the card minus the reserve;
* once the orchestrator has a backend it keeps one after every step, and it ends on the target's;
* every BindRole names a model that can serve at that point (up, remote, or startable on demand);
* no model stops while a role points at it;
* the plan ends in the target stack: its roles bound, its always-on members up.
Every infeasible plan says why. A machine with room for everything never refuses, and a card
sized for the target refuses a switch only when the orchestrator's old and new models cannot
coexist (``tight_gpu_switches``: the cases where the order of steps decides).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackd.config.models import Lifecycle, Model, Placement, Runtime, StacksConfig
from stackd.hardware.types import GpuDevice, HardwareSnapshot
from stackd.planner import bindings_after_each_step, plan_switch, simulate_vram
from stackd.planner.plan import (
    BindRole,
    LoadModel,
    ObservedState,
    Plan,
    PullModel,
    StartContainer,
    StopContainer,
    UnbindRole,
    UnloadModel,
)
from tests.budget import examples

GIB = 1024
ROLES = ["orchestrator", "embeddings", "vision", "reasoning", "reflex"]
PROPERTY = settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Case:
    config: StacksConfig
    observed: ObservedState
    target: str
    hardware: HardwareSnapshot


def _model(draw: st.DrawFn, name: str, kind: str) -> dict[str, Any]:
    on_demand = draw(st.integers(0, 3)) == 0
    spec: dict[str, Any] = {"lifecycle": "on_demand" if on_demand else "always_on"}
    if on_demand and kind == "gpu" and draw(st.booleans()):
        spec["swap_group"] = draw(st.sampled_from(["creative", "vision"]))
    if kind == "remote":
        return {
            "runtime": "remote",
            "placement": "cloud",
            "api": "openai",
            "endpoint": "http://127.0.0.1:9999/v1",
            "remote": {},
        }
    size = draw(st.integers(1, 48)) / 2  # 0.5 .. 24 GiB
    if kind == "gpu" and draw(st.booleans()):
        return {
            **spec,
            "runtime": "docker",
            "placement": "gpu",
            "api": "openai",
            "memory_gb": size,
            "endpoint": "http://127.0.0.1:9000/v1",
            "docker": {"container": f"c-{name}"},
        }
    placement = "gpu" if kind == "gpu" else "cpu"
    options = {} if kind == "gpu" else {"num_gpu": 0}
    return {
        **spec,
        "runtime": "ollama",
        "placement": placement,
        "api": "ollama",
        "memory_gb": size,
        "ollama": {"tag": f"{name}:latest", "options": options},
    }


@st.composite
def configs(draw: st.DrawFn) -> StacksConfig:
    kinds = draw(st.lists(st.sampled_from(["gpu", "gpu", "cpu", "remote"]), min_size=1, max_size=8))
    models = {f"m{i}-{kind}": _model(draw, f"m{i}-{kind}", kind) for i, kind in enumerate(kinds)}
    names = list(models)
    always_on = [n for n in names if models[n].get("lifecycle") != "on_demand"] or names
    stacks: dict[str, Any] = {}
    for s in range(draw(st.integers(2, 4))):
        # Mostly an always-on orchestrator; now and then any model, which the planner must refuse
        # when it is on demand.
        pool = names if draw(st.integers(0, 9)) == 9 else always_on
        roles = {"orchestrator": draw(st.sampled_from(pool))}
        for role in ROLES[1:]:
            if draw(st.booleans()):
                roles[role] = draw(st.sampled_from(names))
        members = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
        stacks[f"s{s}"] = {"roles": roles, "members": members}
    return StacksConfig.model_validate(
        {
            "default_stack": "s0",
            "gpu": {"reserve_gb": draw(st.sampled_from([0, 1, 3]))},
            "roles": {role: {"required": role == "orchestrator"} for role in ROLES},
            "models": models,
            "stacks": stacks,
        }
    )


def subset(draw: st.DrawFn, items: list[str]) -> frozenset[str]:
    return frozenset(draw(st.lists(st.sampled_from(items), unique=True))) if items else frozenset()


@st.composite
def observed_states(draw: st.DrawFn, config: StacksConfig) -> ObservedState:
    """Mostly a stack that runs as planned (the usual start of a switch), sometimes with drift."""
    docker = [n for n, m in config.models.items() if m.docker]
    tags = [m.ollama.tag for m in config.models.values() if m.ollama]
    active = draw(st.none() | st.sampled_from(list(config.stacks)))
    bindings: dict[str, str] = dict(config.stacks[active].roles) if active else {}
    running, loaded = subset(draw, docker), subset(draw, tags)
    if active and draw(st.booleans()):
        members = [(n, config.models[n]) for n in config.stacks[active].member_names]
        always_on = [(n, m) for n, m in members if m.lifecycle == Lifecycle.always_on]
        running |= {n for n, m in always_on if m.docker}
        loaded |= {m.ollama.tag for _, m in always_on if m.ollama}
    if draw(st.booleans()):  # drift: roles lost, or pointing somewhere unexpected
        for role in ROLES:
            choice = draw(st.sampled_from(["keep", "drop", "move"]))
            if choice == "drop":
                bindings.pop(role, None)
            elif choice == "move":
                bindings[role] = draw(st.sampled_from(list(config.models)))
    return ObservedState(
        active_stack=active,
        running_containers=running,
        pulled_tags=subset(draw, tags) | (loaded if draw(st.booleans()) else frozenset()),
        loaded_tags=loaded,
        bindings=bindings,
    )


def gpu_mib_up(config: StacksConfig, observed: ObservedState) -> int:
    gpu = [(n, m) for n, m in config.models.items() if m.placement == Placement.gpu]
    return sum(m.memory_mib for n, m in gpu if up(n, m, observed))


def target_gpu_need(config: StacksConfig, target: str) -> int:
    """MiB the target's GPU members need at rest: always-on ones plus each swap group's largest."""
    gpu = [
        config.models[n]
        for n in config.stacks[target].member_names
        if config.models[n].placement == Placement.gpu
    ]
    groups: dict[str, int] = {}
    for i, m in enumerate(gpu):
        if m.lifecycle == Lifecycle.on_demand:
            key = m.swap_group or f"alone-{i}"
            groups[key] = max(groups.get(key, 0), m.memory_mib)
    return sum(m.memory_mib for m in gpu if m.lifecycle == Lifecycle.always_on) + sum(groups.values())


@st.composite
def machines(draw: st.DrawFn, config: StacksConfig, observed: ObservedState, target: str) -> HardwareSnapshot:
    # Rare cases sit at the far end of each range: hypothesis favours small integers.
    ram_total = 128 * GIB
    ram_available = draw(st.integers(1, 128)) * GIB
    if draw(st.integers(0, 9)) == 9:
        return HardwareSnapshot((), ram_total, ram_available, 16, "none", "no NVIDIA driver: test")
    foreign = draw(st.integers(0, 4 * GIB))
    if draw(st.booleans()):
        # A card just large enough for the target at rest: switches must order their steps.
        reserve = max(round(config.gpu.reserve_gb * GIB), foreign)
        total = reserve + target_gpu_need(config, target) + draw(st.integers(0, 8 * GIB))
    else:
        total = draw(st.integers(4, 96)) * GIB
    used = min(foreign + gpu_mib_up(config, observed), total)
    device = GpuDevice(0, "random card", total, used, total - used)
    return HardwareSnapshot((device,), ram_total, ram_available, 16, "scenario:random")


@st.composite
def random_cases(draw: st.DrawFn) -> Case:
    config = draw(configs())
    observed = draw(observed_states(config))
    target = draw(st.sampled_from(list(config.stacks)))
    return Case(config, observed, target, draw(machines(config, observed, target)))


@st.composite
def tight_gpu_switches(draw: st.DrawFn) -> Case:
    """Stack a runs; b is the target; the card has just room for b: where step order matters."""
    kinds = draw(st.lists(st.sampled_from(["gpu", "gpu", "gpu", "cpu"]), min_size=3, max_size=7))
    models = {f"m{i}-{kind}": _model(draw, f"m{i}-{kind}", kind) for i, kind in enumerate(kinds)}
    names = list(models)
    always_on = [n for n in names if models[n].get("lifecycle") != "on_demand"] or names
    stacks: dict[str, Any] = {}
    for stack in ("a", "b"):
        # The orchestrator usually moves: that is the switch where order matters most.
        taken = {s["roles"]["orchestrator"] for s in stacks.values()}
        roles = {"orchestrator": draw(st.sampled_from([n for n in always_on if n not in taken] or always_on))}
        for role in ROLES[1:]:
            if draw(st.booleans()):
                roles[role] = draw(st.sampled_from(names))
        members = draw(st.lists(st.sampled_from(names), unique=True, max_size=2))
        stacks[stack] = {"roles": roles, "members": members}
    config = StacksConfig.model_validate(
        {
            "default_stack": "a",
            "gpu": {"reserve_gb": draw(st.sampled_from([0, 1, 3]))},
            "roles": {role: {"required": role == "orchestrator"} for role in ROLES},
            "models": models,
            "stacks": stacks,
        }
    )
    a = [(n, config.models[n]) for n in config.stacks["a"].member_names]
    tags = frozenset(m.ollama.tag for m in config.models.values() if m.ollama)
    observed = ObservedState(
        active_stack="a",
        running_containers=frozenset(n for n, m in a if m.docker and m.lifecycle == Lifecycle.always_on),
        pulled_tags=tags,
        loaded_tags=frozenset(m.ollama.tag for _, m in a if m.ollama and m.lifecycle == Lifecycle.always_on),
        bindings=dict(config.stacks["a"].roles),
    )
    reserve = round(config.gpu.reserve_gb * GIB)
    total = reserve + target_gpu_need(config, "b") + draw(st.integers(0, 6 * GIB))
    used = min(reserve + gpu_mib_up(config, observed), total)
    device = GpuDevice(0, "tight card", total, used, total - used)
    hardware = HardwareSnapshot((device,), 128 * GIB, 100 * GIB, 16, "scenario:tight")
    return Case(config, observed, "b", hardware)


def cases() -> st.SearchStrategy[Case]:
    return st.one_of(random_cases(), tight_gpu_switches())


# ------------------------------------------------------------------ the oracle: a replay written here


def up(name: str, model: Model, observed: ObservedState) -> bool:
    if model.runtime == Runtime.docker:
        return name in observed.running_containers
    if model.runtime == Runtime.ollama:
        return model.ollama is not None and model.ollama.tag in observed.loaded_tags
    return True


@dataclass
class Replay:
    """What is up and pulled before each step (index i) and after the last one (index len)."""

    up: list[set[str]]
    pulled: list[set[str]]


def replay(plan: Plan, config: StacksConfig, observed: ObservedState) -> Replay:
    models = config.models
    now = {n for n, m in models.items() if up(n, m, observed)}
    pulled = set(observed.pulled_tags) | set(observed.loaded_tags)
    out = Replay([set(now)], [set(pulled)])
    for step in plan.steps:
        match step:
            case PullModel(tag=tag):
                pulled.add(tag)
            case StartContainer(model=name):
                now.add(name)
            case LoadModel(tag=tag):
                now |= {n for n, m in models.items() if m.ollama and m.ollama.tag == tag}
            case StopContainer(model=name):
                now.discard(name)
            case UnloadModel(tag=tag):
                now -= {n for n, m in models.items() if m.ollama and m.ollama.tag == tag}
        out.up.append(set(now))
        out.pulled.append(set(pulled))
    return out


def can_serve(name: str, config: StacksConfig, now: set[str], pulled: set[str]) -> bool:
    model = config.models.get(name)
    if model is None:
        return False
    if name in now or model.runtime == Runtime.remote:
        return True
    if model.lifecycle == Lifecycle.on_demand:
        return model.ollama is None or model.ollama.tag in pulled
    return False


def feasible_plan(case: Case) -> Plan | None:
    plan = plan_switch(case.config, case.observed, case.target, case.hardware)
    return plan if plan.feasible else None


# ------------------------------------------------------------------ properties


@PROPERTY
@given(cases())
def test_no_start_puts_vram_above_the_card(case: Case) -> None:
    plan = feasible_plan(case)
    if plan is None or plan.vram is None:
        return
    limit = plan.vram.total_mib - plan.vram.reserve_mib
    states = replay(plan, case.config, case.observed)
    gpu = {n for n, m in case.config.models.items() if m.placement == Placement.gpu}
    in_use = [sum(case.config.models[n].memory_mib for n in now & gpu) for now in states.up]
    assert in_use[1:] == simulate_vram(plan, case.config, case.observed)
    for before, after in itertools.pairwise(in_use):
        assert after <= before or after <= limit, (plan.steps, in_use, limit)


@PROPERTY
@given(cases())
def test_the_orchestrator_keeps_a_backend_after_every_step(case: Case) -> None:
    plan = feasible_plan(case)
    if plan is None:
        return
    states = replay(plan, case.config, case.observed)
    tables = [dict(case.observed.bindings), *bindings_after_each_step(plan, case.observed)]
    served = [
        table.get("orchestrator") is not None and can_serve(table["orchestrator"], case.config, now, pulled)
        for table, now, pulled in zip(tables, states.up, states.pulled, strict=True)
    ]
    first = served.index(True) if True in served else len(served)
    assert all(served[first:]), (plan.steps, served)
    assert served[-1]
    assert tables[-1]["orchestrator"] == case.config.stacks[case.target].roles["orchestrator"]


@PROPERTY
@given(cases())
def test_roles_bind_only_to_models_that_can_serve(case: Case) -> None:
    plan = feasible_plan(case)
    if plan is None:
        return
    states = replay(plan, case.config, case.observed)
    for i, step in enumerate(plan.steps):
        if isinstance(step, BindRole):
            # The state before the bind: the model must already be up (make-before-break).
            assert can_serve(step.model, case.config, states.up[i], states.pulled[i]), (plan.steps, i)


@PROPERTY
@given(cases())
def test_no_model_stops_while_a_role_points_at_it(case: Case) -> None:
    plan = feasible_plan(case)
    if plan is None:
        return
    tables = [dict(case.observed.bindings), *bindings_after_each_step(plan, case.observed)]
    models = case.config.models
    for i, step in enumerate(plan.steps):
        if isinstance(step, StopContainer | UnloadModel):
            stopping = {step.model}
            if isinstance(step, UnloadModel):  # an unload takes down every model of that tag
                stopping |= {n for n, m in models.items() if m.ollama and m.ollama.tag == step.tag}
            assert not stopping & set(tables[i].values()), (plan.steps, i)
        if isinstance(step, UnbindRole):
            assert step.role != "orchestrator"


@PROPERTY
@given(cases())
def test_a_feasible_plan_ends_in_the_target_stack(case: Case) -> None:
    plan = feasible_plan(case)
    if plan is None:
        return
    stack = case.config.stacks[case.target]
    final_up = replay(plan, case.config, case.observed).up[-1]
    assert bindings_after_each_step(plan, case.observed)[-1:] in ([dict(stack.roles)], [])
    assert dict(plan.bindings_after) == dict(stack.roles)
    for name in stack.member_names:
        model = case.config.models[name]
        if model.lifecycle == Lifecycle.always_on:
            assert name in final_up, (plan.steps, name)
    starts = {s.model for s in plan.steps if isinstance(s, StartContainer | LoadModel)}
    assert not {n for n in starts if case.config.models[n].lifecycle == Lifecycle.on_demand}
    leftover = {
        n
        for n in final_up
        if n not in stack.member_names
        and case.config.models[n].runtime != Runtime.remote
        and not _shares_a_target_tag(case.config, stack.member_names, n)
    }
    assert not leftover, (plan.steps, leftover)


def _shares_a_target_tag(config: StacksConfig, members: tuple[str, ...], name: str) -> bool:
    def tag_of(model: str) -> str | None:
        runtime = config.models[model].ollama
        return runtime.tag if runtime is not None else None

    tag = tag_of(name)
    return tag is not None and tag in {tag_of(m) for m in members}


@PROPERTY
@given(cases())
def test_an_infeasible_plan_says_why(case: Case) -> None:
    plan = plan_switch(case.config, case.observed, case.target, case.hardware)
    assert plan.feasible == (not plan.refusals)
    for refusal in plan.refusals:
        assert refusal.code in {"vram", "ram", "orchestrator", "no_gpu"}
        assert len(refusal.message) > 20


@PROPERTY
@given(configs(), st.data())
def test_a_machine_with_room_for_everything_never_refuses(config: StacksConfig, data: st.DataObject) -> None:
    observed = data.draw(observed_states(config))
    target = data.draw(st.sampled_from(list(config.stacks)))
    everything = sum(m.memory_mib for m in config.models.values()) + 4 * GIB
    device = GpuDevice(0, "roomy", 2 * everything, 0, 2 * everything)
    roomy = HardwareSnapshot((device,), 2 * everything, 2 * everything, 16, "scenario:roomy")
    plan = plan_switch(config, observed, target, roomy)
    orchestrator = config.models[config.stacks[target].roles["orchestrator"]]
    assert plan.feasible == (orchestrator.lifecycle == Lifecycle.always_on), plan.refusals


@PROPERTY
@given(cases())
def test_the_planner_is_a_pure_function(case: Case) -> None:
    first = plan_switch(case.config, case.observed, case.target, case.hardware)
    assert plan_switch(case.config, case.observed, case.target, case.hardware) == first


@PROPERTY
@given(tight_gpu_switches())
def test_a_switch_that_fits_at_rest_is_refused_only_when_the_orchestrator_cannot_move(case: Case) -> None:
    """Completeness of the reordering: breaking non-orchestrator members first always makes room,
    so the one refusal left is an orchestrator whose old and new models cannot coexist."""
    plan = plan_switch(case.config, case.observed, case.target, case.hardware)
    if any(r.code != "vram" for r in plan.refusals):
        return
    assert plan.vram is not None and plan.vram.headroom_mib >= 0  # the card was sized for the target
    models, target = case.config.models, case.config.stacks[case.target]
    gpu_up = {n for n, m in models.items() if m.placement == Placement.gpu and up(n, m, case.observed)}
    old, new = case.observed.bindings["orchestrator"], target.roles["orchestrator"]
    must_overlap = (
        old in gpu_up
        and old not in target.member_names
        and models[new].placement == Placement.gpu
        and new not in gpu_up
    )
    overlap_mib = sum(models[n].memory_mib for n in (gpu_up & set(target.member_names)) | {old, new})
    fits = not must_overlap or overlap_mib <= plan.vram.total_mib - plan.vram.reserve_mib
    assert plan.feasible == fits, (plan.steps, plan.refusals)
