"""The planner on the seed machine: the bundled four stacks on rtx5090_32g_windows_desktop."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.errors import NotFound
from stackd.hardware.scenario import ScenarioReader
from stackd.planner import plan_switch
from stackd.planner.plan import (
    BindRole,
    LedgerItem,
    LoadModel,
    ObservedState,
    ProbeRemote,
    PullModel,
    StartContainer,
    StopContainer,
    UnbindRole,
)
from tests.unit.conftest_planner import bundled_config, fixed, rtx5090, snapshot

CONFIG = bundled_config()
NOTHING = ObservedState()
ORCH_GPU = StartContainer("orchestrator-8b", "aether-orchestrator")
EMBED_GPU = StartContainer("embeddings-nomic", "aether-embeddings")
PROBES = [
    ProbeRemote("deepseek-r1-cloud"),
    ProbeRemote("mirothinker-cloud"),
    ProbeRemote("gemini-flash"),
    ProbeRemote("claude-sonnet"),
]
CLOUD_ROLES = [BindRole("deep_reasoning", "deepseek-r1-cloud"), BindRole("research", "mirothinker-cloud")]
ALL_TAGS = frozenset(m.ollama.tag for m in CONFIG.models.values() if m.ollama)


def running(stack: str) -> ObservedState:
    """``stack`` fully up: its always-on members running, every tag pulled, its roles bound."""
    members = [CONFIG.models[n] for n in CONFIG.stacks[stack].member_names]
    names = CONFIG.stacks[stack].member_names
    return ObservedState(
        active_stack=stack,
        running_containers=frozenset(
            n for n, m in zip(names, members, strict=True) if m.docker and m.lifecycle == "always_on"
        ),
        running_processes=frozenset(
            n for n, m in zip(names, members, strict=True) if m.process and m.lifecycle == "always_on"
        ),
        pulled_tags=ALL_TAGS,
        loaded_tags=frozenset(m.ollama.tag for m in members if m.ollama and m.lifecycle == "always_on"),
        bindings=dict(CONFIG.stacks[stack].roles),
    )


def test_nothing_to_cloud_offload() -> None:
    plan = plan_switch(CONFIG, NOTHING, "cloud-offload", rtx5090())
    assert plan.feasible
    assert list(plan.steps) == [
        ORCH_GPU,
        EMBED_GPU,
        *PROBES,
        BindRole("orchestrator", "orchestrator-8b"),
        BindRole("embeddings", "embeddings-nomic"),
        BindRole("vision", "vision-qwen25vl"),
        BindRole("diffusion", "comfyui-flux"),
        BindRole("reasoning", "deepseek-r1-cloud"),
        *CLOUD_ROLES,
    ]


def test_nothing_to_elastic_hybrid_pulls_on_demand_slices_but_loads_only_12b() -> None:
    plan = plan_switch(CONFIG, NOTHING, "elastic-hybrid", rtx5090())
    assert plan.feasible
    assert list(plan.steps) == [
        PullModel("elastic-6b", "nemotron-elastic:6b"),
        PullModel("elastic-12b", "nemotron-elastic:12b"),
        PullModel("elastic-9b", "nemotron-elastic:9b"),
        ORCH_GPU,
        EMBED_GPU,
        LoadModel("elastic-12b", "nemotron-elastic:12b"),
        *PROBES,
        BindRole("orchestrator", "orchestrator-8b"),
        BindRole("embeddings", "embeddings-nomic"),
        BindRole("vision", "vision-qwen25vl"),
        BindRole("diffusion", "comfyui-flux"),
        BindRole("reflex", "elastic-6b"),
        BindRole("reasoning", "elastic-12b"),
        *CLOUD_ROLES,
    ]


def test_nothing_to_ollama_hybrid() -> None:
    plan = plan_switch(CONFIG, NOTHING, "ollama-hybrid", rtx5090())
    assert plan.feasible
    assert list(plan.steps) == [
        PullModel("embeddings-cpu", "nomic-embed-text:latest"),
        PullModel("reflex-llama32-3b", "llama3.2:3b"),
        PullModel("elastic-12b", "nemotron-elastic:12b"),
        ORCH_GPU,
        LoadModel("embeddings-cpu", "nomic-embed-text:latest"),
        LoadModel("reflex-llama32-3b", "llama3.2:3b"),
        LoadModel("elastic-12b", "nemotron-elastic:12b"),
        *PROBES,
        BindRole("orchestrator", "orchestrator-8b"),
        BindRole("embeddings", "embeddings-cpu"),
        BindRole("reflex", "reflex-llama32-3b"),
        BindRole("reasoning", "elastic-12b"),
        *CLOUD_ROLES,
    ]


def test_nothing_to_ollama_only_leaves_the_gpu_empty() -> None:
    plan = plan_switch(CONFIG, NOTHING, "ollama-only", rtx5090())
    assert plan.feasible
    assert list(plan.steps) == [
        PullModel("orchestrator-cpu", "qwen3:8b"),
        PullModel("embeddings-cpu", "nomic-embed-text:latest"),
        PullModel("reflex-llama32-3b", "llama3.2:3b"),
        PullModel("elastic-12b", "nemotron-elastic:12b"),
        LoadModel("orchestrator-cpu", "qwen3:8b"),
        LoadModel("embeddings-cpu", "nomic-embed-text:latest"),
        LoadModel("reflex-llama32-3b", "llama3.2:3b"),
        LoadModel("elastic-12b", "nemotron-elastic:12b"),
        *PROBES,
        BindRole("orchestrator", "orchestrator-cpu"),
        BindRole("embeddings", "embeddings-cpu"),
        BindRole("reflex", "reflex-llama32-3b"),
        BindRole("reasoning", "elastic-12b"),
        *CLOUD_ROLES,
    ]
    assert plan.vram is not None and plan.vram.always_on_mib == 0 and plan.vram.swap_budget_mib == 0
    assert plan.ram.always_on_mib == round((6 + 0.5 + 2.5 + 7.5) * 1024)


def test_elastic_hybrid_ledger_on_the_rtx5090() -> None:
    vram = plan_switch(CONFIG, NOTHING, "elastic-hybrid", rtx5090()).vram
    assert vram is not None
    # The desktop holds 3100 MiB, more than gpu.reserve_gb (3 GiB = 3072 MiB): the larger counts.
    assert (vram.total_mib, vram.reserve_mib) == (32607, 3100)
    assert (vram.always_on_mib, vram.swap_budget_mib) == (14336, 12288)
    assert vram.largest_swap_group == "gpu-creative"
    assert vram.headroom_mib == 32607 - 3100 - 14336 - 12288
    assert vram.gpu_name == "NVIDIA GeForce RTX 5090" and vram.simulated
    foreign = "foreign processes (dwm.exe 1.8 GiB, chrome.exe 0.6 GiB, explorer.exe 0.4 GiB, …)"
    assert LedgerItem(foreign, 3100, "foreign") in vram.items
    assert LedgerItem("vision-qwen25vl", 8192, "on_demand") in vram.items


def test_elastic_hybrid_does_not_fit_a_16_gib_card() -> None:
    plan = plan_switch(CONFIG, NOTHING, "elastic-hybrid", fixed(16))
    assert not plan.feasible
    (refusal,) = plan.refusals
    assert refusal.code == "vram"
    assert refusal.message.startswith(
        "elastic-hybrid needs 29 GiB of VRAM (orchestrator-8b 13 GiB always-on, embeddings-nomic 1 GiB "
        "always-on, gpu-creative swap group 12 GiB (comfyui-flux), 3 GiB reserve) but GPU 0 (fixed 16GB) "
        "has 16 GiB: 13 GiB short; "
    )
    assert plan.vram is not None and plan.vram.headroom_mib == 16384 - 29 * 1024


def test_elastic_hybrid_fits_a_32_gib_card() -> None:
    plan = plan_switch(CONFIG, NOTHING, "elastic-hybrid", fixed(32))
    assert plan.feasible and plan.refusals == ()
    assert plan.vram is not None
    committed = plan.vram.reserve_mib + plan.vram.always_on_mib  # 3 + 13 + 1
    assert (committed, plan.vram.swap_budget_mib) == (17 * 1024, 12 * 1024)
    assert plan.vram.headroom_mib == 3 * 1024


def test_foreign_processes_larger_than_the_reserve_are_named(tmp_path: Path) -> None:
    scenario = tmp_path / "rtx5090_with_blender.yaml"
    scenario.write_text(
        "devices:\n  - name: NVIDIA GeForce RTX 5090\n    total_mib: 32607\n    processes:\n"
        "      - {pid: 1840, name: dwm.exe, used_mib: 1792}\n"
        "      - {pid: 6100, name: blender.exe, used_mib: 5120}\n"
    )
    plan = plan_switch(CONFIG, NOTHING, "elastic-hybrid", snapshot(ScenarioReader(scenario)))
    assert not plan.feasible
    assert plan.vram is not None and plan.vram.reserve_mib == 6912
    assert "6.8 GiB held by other processes (blender.exe 5 GiB, dwm.exe 1.8 GiB)" in plan.refusals[0].message


def test_cloud_offload_to_ollama_only_moves_the_orchestrator_to_the_cpu() -> None:
    plan = plan_switch(CONFIG, running("cloud-offload"), "ollama-only", rtx5090())
    assert plan.feasible
    assert list(plan.steps) == [
        LoadModel("orchestrator-cpu", "qwen3:8b"),
        LoadModel("embeddings-cpu", "nomic-embed-text:latest"),
        LoadModel("reflex-llama32-3b", "llama3.2:3b"),
        LoadModel("elastic-12b", "nemotron-elastic:12b"),
        *PROBES,
        BindRole("orchestrator", "orchestrator-cpu"),
        BindRole("embeddings", "embeddings-cpu"),
        BindRole("reflex", "reflex-llama32-3b"),
        BindRole("reasoning", "elastic-12b"),
        UnbindRole("vision"),
        UnbindRole("diffusion"),
        StopContainer("orchestrator-8b", "aether-orchestrator"),
        StopContainer("embeddings-nomic", "aether-embeddings"),
    ]
    assert plan.bindings_after == CONFIG.stacks["ollama-only"].roles


@pytest.mark.parametrize("stack", list(CONFIG.stacks))
def test_switching_to_the_running_stack_does_nothing_but_probe(stack: str) -> None:
    plan = plan_switch(CONFIG, running(stack), stack, rtx5090())
    assert plan.feasible
    assert [s for s in plan.steps if not isinstance(s, ProbeRemote)] == []


def test_drift_restarts_only_the_member_that_died() -> None:
    observed = running("cloud-offload")
    died = ObservedState(**{**observed.__dict__, "running_containers": frozenset({"orchestrator-8b"})})
    plan = plan_switch(CONFIG, died, "cloud-offload", rtx5090())
    assert [s for s in plan.steps if not isinstance(s, ProbeRemote)] == [EMBED_GPU]


def test_unknown_stack_names_the_valid_ones() -> None:
    with pytest.raises(
        NotFound,
        match=r"^unknown stack 'x'; valid stacks: cloud-offload, elastic-hybrid, "
        r"ollama-hybrid, ollama-only, embedded, embedded-long$",
    ):
        plan_switch(CONFIG, NOTHING, "x", rtx5090())
