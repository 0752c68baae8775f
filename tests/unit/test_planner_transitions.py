"""Switches between stacks whose GPU members cannot all be resident at once, and the refusals."""

from __future__ import annotations

from stackd.hardware.types import HardwareSnapshot
from stackd.planner import bindings_after_each_step, plan_switch, simulate_vram
from stackd.planner.plan import (
    BindRole,
    LoadModel,
    ObservedState,
    Plan,
    ProbeRemote,
    StartContainer,
    StopContainer,
    UnbindRole,
)
from tests.unit.conftest_planner import bundled_config, cpu_model, fixed, gpu_model, rtx5090, small_config

GIB = 1024

# A 24 GiB card without reserve. orch-a 10 + vis-a 8 run in stack "a".
MODELS = {
    "orch-a": gpu_model("c-orch-a", 10),
    "orch-c": gpu_model("c-orch-c", 12),
    "orch-big": gpu_model("c-orch-big", 15),
    "vis-a": gpu_model("c-vis-a", 8),
    "vis-b": gpu_model("c-vis-b", 10),
    "emb-d": gpu_model("c-emb-d", 6),
    "cpu-orch": cpu_model("small:1b", 2),
}
CONFIG = small_config(
    MODELS,
    {
        "a": {"roles": {"orchestrator": "orch-a", "vision": "vis-a"}},
        "b": {"roles": {"orchestrator": "orch-a", "vision": "vis-b"}},
        "c": {"roles": {"orchestrator": "orch-c"}},
        "d": {"roles": {"orchestrator": "orch-c", "embeddings": "emb-d"}},
        "big": {"roles": {"orchestrator": "orch-big"}},
        "cpu": {"roles": {"orchestrator": "cpu-orch"}},
    },
)
A_RUNNING = ObservedState(
    active_stack="a",
    running_containers=frozenset({"orch-a", "vis-a"}),
    bindings={"orchestrator": "orch-a", "vision": "vis-a"},
)


def card(total_gib: float) -> HardwareSnapshot:
    return fixed(total_gib)


def start(name: str) -> StartContainer:
    return StartContainer(name, f"c-{name}")


def stop(name: str) -> StopContainer:
    return StopContainer(name, f"c-{name}")


def peak(plan: Plan, observed: ObservedState = A_RUNNING) -> int:
    return max(simulate_vram(plan, CONFIG, observed))


def test_make_before_break_when_both_fit() -> None:
    plan = plan_switch(CONFIG, A_RUNNING, "b", card(32))
    assert list(plan.steps) == [start("vis-b"), BindRole("vision", "vis-b"), stop("vis-a")]
    assert simulate_vram(plan, CONFIG, A_RUNNING) == [28 * GIB, 28 * GIB, 20 * GIB]


def test_a_role_breaks_before_it_makes_when_old_and_new_do_not_fit_together() -> None:
    plan = plan_switch(CONFIG, A_RUNNING, "b", card(24))
    assert plan.feasible
    assert list(plan.steps) == [
        UnbindRole("vision"),
        stop("vis-a"),
        start("vis-b"),
        BindRole("vision", "vis-b"),
    ]
    assert peak(plan) == 20 * GIB
    assert [b.get("orchestrator") for b in bindings_after_each_step(plan, A_RUNNING)] == ["orch-a"] * 4


def test_the_orchestrator_moves_make_before_break_after_other_members_made_room() -> None:
    plan = plan_switch(CONFIG, A_RUNNING, "c", card(24))
    assert plan.feasible
    assert list(plan.steps) == [
        UnbindRole("vision"),
        stop("vis-a"),
        start("orch-c"),
        BindRole("orchestrator", "orch-c"),
        stop("orch-a"),
    ]
    assert simulate_vram(plan, CONFIG, A_RUNNING) == [18 * GIB, 10 * GIB, 22 * GIB, 22 * GIB, 12 * GIB]


def test_the_orchestrator_moves_first_when_the_new_members_fill_the_card() -> None:
    plan = plan_switch(CONFIG, A_RUNNING, "d", card(24))
    assert plan.feasible
    assert list(plan.steps) == [
        UnbindRole("vision"),
        stop("vis-a"),
        start("orch-c"),
        BindRole("orchestrator", "orch-c"),
        stop("orch-a"),
        start("emb-d"),
        BindRole("embeddings", "emb-d"),
    ]
    assert peak(plan) == 22 * GIB


def test_the_orchestrator_cannot_move_without_a_gap() -> None:
    plan = plan_switch(CONFIG, A_RUNNING, "big", card(24))
    assert not plan.feasible
    (refusal,) = plan.refusals
    assert refusal.code == "vram" and refusal.model == "orch-big"
    assert refusal.message.startswith(
        "switching to big would overfill GPU 0 (fixed 24GB) at step 3: starting orch-big (15 GiB) while "
        "orch-a 10 GiB is still up needs 25 GiB + 0 GiB reserve, and the card has 24 GiB; the orchestrator "
        "cannot move from orch-a to orch-big without a gap, so orch-a must run until orch-big is up."
    )
    # The stack alone fits the card: only the move is refused.
    assert plan.vram is not None and plan.vram.headroom_mib == 9 * GIB


def test_a_gpu_stack_without_a_gpu_is_refused_with_the_driver_state() -> None:
    state = "no NVIDIA driver: libnvidia-ml.so.1 not found"
    no_gpu = HardwareSnapshot((), 131072, 100 * GIB, 32, "none", state)
    plan = plan_switch(CONFIG, ObservedState(), "a", no_gpu)
    assert not plan.feasible and plan.vram is None
    (refusal,) = plan.refusals
    assert refusal.code == "no_gpu"
    assert refusal.message == (
        f"a runs orch-a, vis-a on the GPU but no GPU was found ({state}); set gpu.total_gb, pass "
        "--gpu-total-gb N or --gpu-scenario FILE to plan for a card, or pick a stack without GPU "
        "members (cpu)"
    )
    assert plan_switch(CONFIG, ObservedState(), "cpu", no_gpu).feasible


def test_the_configured_total_wins_over_the_device() -> None:
    config = small_config(MODELS, {"c": {"roles": {"orchestrator": "orch-c"}}}, total_gb=16, reserve_gb=1)
    plan = plan_switch(config, ObservedState(), "c", card(80))
    assert plan.vram is not None
    assert (plan.vram.total_mib, plan.vram.headroom_mib) == (16 * GIB, 3 * GIB)


def test_a_stack_without_an_orchestrator_is_refused() -> None:
    stacks = {"a": {"roles": {"orchestrator": "orch-a"}}, "headless": {"roles": {"vision": "vis-a"}}}
    config = small_config(MODELS, stacks, required_orchestrator=False)
    plan = plan_switch(config, A_RUNNING, "headless", card(24))
    assert not plan.feasible
    assert [r.code for r in plan.refusals] == ["orchestrator"]
    assert "add 'orchestrator: MODEL' under stacks.headless.roles" in plan.refusals[0].message
    assert UnbindRole("orchestrator") not in plan.steps


def test_an_on_demand_orchestrator_is_refused() -> None:
    models = {**MODELS, "lazy": gpu_model("c-lazy", 4, lifecycle="on_demand")}
    config = small_config(models, {"lazy": {"roles": {"orchestrator": "lazy"}}})
    plan = plan_switch(config, ObservedState(), "lazy", card(24))
    assert [(r.code, r.model) for r in plan.refusals] == [("orchestrator", "lazy")]
    assert "set models.lazy.lifecycle: always_on" in plan.refusals[0].message


SEED = bundled_config()


def test_cpu_models_above_the_available_ram_are_refused() -> None:
    plan = plan_switch(SEED, ObservedState(), "ollama-only", rtx5090(available_gib=8))
    assert not plan.feasible
    (refusal,) = plan.refusals
    assert refusal.code == "ram" and refusal.model == "elastic-12b"
    assert refusal.message.startswith(
        "ollama-only needs 16.5 GiB of RAM for its CPU models (orchestrator-cpu 6 GiB always-on, "
        "embeddings-cpu 0.5 GiB always-on, reflex-llama32-3b 2.5 GiB always-on, elastic-12b 7.5 GiB "
        "always-on) but the host has 8 GiB available (128 GiB total): 8.5 GiB short; "
    )


def test_ram_held_by_members_that_stay_counts_as_theirs() -> None:
    tags = frozenset({"qwen3:8b", "nomic-embed-text:latest", "llama3.2:3b", "nemotron-elastic:12b"})
    loaded = ObservedState(
        active_stack="ollama-only",
        pulled_tags=tags,
        loaded_tags=tags,
        bindings=dict(SEED.stacks["ollama-only"].roles),
    )
    plan = plan_switch(SEED, loaded, "ollama-only", rtx5090(available_gib=1))
    assert plan.feasible
    assert plan.ram.headroom_mib == 1 * GIB


def test_the_largest_on_demand_cpu_slice_is_budgeted() -> None:
    plan = plan_switch(SEED, ObservedState(), "elastic-hybrid", rtx5090())
    assert (plan.ram.always_on_mib, plan.ram.on_demand_max_mib) == (7680, 5632)  # 12b; 9b > 6b


LEASED = ObservedState(
    active_stack="cloud-offload",
    running_containers=frozenset({"orchestrator-8b", "embeddings-nomic", "vision-qwen25vl"}),
    pulled_tags=frozenset({"nomic-embed-text:latest", "llama3.2:3b", "nemotron-elastic:12b"}),
    bindings=dict(SEED.stacks["cloud-offload"].roles),
)


def test_a_leased_on_demand_member_stays_while_its_stack_keeps_it() -> None:
    plan = plan_switch(SEED, LEASED, "elastic-hybrid", rtx5090())
    assert StopContainer("vision-qwen25vl", "aether-vision") not in plan.steps


def test_a_leased_on_demand_member_stops_with_the_members_that_leave() -> None:
    plan = plan_switch(SEED, LEASED, "ollama-hybrid", rtx5090())
    assert plan.feasible
    assert [s for s in plan.steps if not isinstance(s, ProbeRemote)] == [
        LoadModel("embeddings-cpu", "nomic-embed-text:latest"),
        LoadModel("reflex-llama32-3b", "llama3.2:3b"),
        LoadModel("elastic-12b", "nemotron-elastic:12b"),
        BindRole("embeddings", "embeddings-cpu"),
        BindRole("reflex", "reflex-llama32-3b"),
        BindRole("reasoning", "elastic-12b"),
        UnbindRole("vision"),
        UnbindRole("diffusion"),
        StopContainer("embeddings-nomic", "aether-embeddings"),
        StopContainer("vision-qwen25vl", "aether-vision"),
    ]
