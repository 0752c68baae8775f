"""The KV-cache planner's arithmetic, checked by hand, and where the plan shows it.

Each architecture cites where its numbers come from; each expected figure is written out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stackd.config.architecture import Architecture
from stackd.config.architecture_files import fill_architecture
from stackd.config.models import StacksConfig
from stackd.planner import plan_switch
from stackd.planner.kv import kv_shape
from stackd.planner.plan import ObservedState
from tests.unit.conftest_planner import fixed, gpu_model

MIB = 1 << 20
GIB = 1 << 30

# meta-llama/Llama-3.1-8B-Instruct, config.json on Hugging Face (the fields the planner reads).
LLAMA_3_1_8B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
# NVIDIA Nemotron-H 8B (nvidia/Nemotron-H-8B-Base-8K): 52 layers, pattern, 32 query heads, 8 KV
# groups, 128 KV channels, 128 Mamba heads of 64, state 128 (NeMo Megatron-Bridge docs,
# docs/models/llm/nemotronh.md, "Nemotron H 8B Specifications"); n_groups 8 and conv_kernel 4 are
# NemotronHConfig's defaults, which describe NemotronH-v0.1 (vLLM transformers_utils/configs/nemotron_h.py).
NEMOTRON_H_8B = {
    "architectures": ["NemotronHForCausalLM"],
    "hidden_size": 4096,
    "num_hidden_layers": 52,
    "hybrid_override_pattern": "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "mamba_num_heads": 128,
    "mamba_head_dim": 64,
    "ssm_state_size": 128,
    "n_groups": 8,
    "conv_kernel": 4,
    "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16",
}


def from_hf(tmp_path: Path, config: dict[str, Any], **explicit: Any) -> Architecture:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return fill_architecture(Architecture(hf_config=str(path), **explicit), tmp_path)


def test_llama_3_1_8b_pure_attention_by_hand(tmp_path: Path) -> None:
    arch = from_hf(tmp_path, LLAMA_3_1_8B)
    shape = kv_shape(arch)
    # head_dim = 4096 / 32 = 128; every one of the 32 layers holds K and V of 8 heads in bf16:
    # 32 layers x 8 heads x (128 + 128) x 2 bytes = 131,072 bytes = 128 KiB per token.
    assert shape.bytes_per_token == 32 * 8 * (128 + 128) * 2 == 131_072
    assert shape.mamba_bytes == 0
    # The full 128K context of one session: 131,072 tokens x 128 KiB = 16 GiB.
    assert arch.context_tokens == 131_072
    assert shape.sequence_bytes(131_072) == 16 * GIB
    # 8K of context: 8,192 x 128 KiB = 1 GiB; 10 GiB of KV room holds 10 such sessions, and a
    # single session of 10 GiB / 128 KiB = 81,920 tokens.
    assert shape.sequence_bytes(8192) == GIB
    assert shape.tokens_in(10 * GIB) == 81_920
    # An fp8 KV cache halves it (explicit fields win over the file).
    assert kv_shape(from_hf(tmp_path, LLAMA_3_1_8B, kv_dtype_bytes=1)).bytes_per_token == 65_536


def test_nemotron_h_8b_hybrid_by_hand(tmp_path: Path) -> None:
    arch = from_hf(tmp_path, NEMOTRON_H_8B)
    shape = kv_shape(arch)
    pattern = NEMOTRON_H_8B["hybrid_override_pattern"]
    assert isinstance(pattern, str) and len(pattern) == 52
    # Only the 4 '*' layers (7, 18, 29, 40) hold KV: 4 x 8 heads x (128 + 128) x 2 bytes = 16 KiB
    # per token, an eighth of a 32-layer transformer's.
    assert (shape.full_layers, shape.mamba_layers) == (4, 24)
    assert shape.bytes_per_token == 4 * 8 * 256 * 2 == 16_384
    # Each of the 24 Mamba layers holds a fixed state per sequence, whatever its length:
    #   conv: (4 - 1) x (128 x 64 + 2 x 8 x 128) = 3 x 10,240 = 30,720 elements
    #   ssm:  128 heads x 64 x 128 state           = 1,048,576 elements
    #   (30,720 + 1,048,576) x 2 bytes = 2,158,592 bytes; x 24 layers = 51,806,208 bytes (49.4 MiB)
    assert arch.mamba is not None and arch.mamba.bytes_per_sequence == 2_158_592
    assert shape.mamba_bytes == 24 * 2_158_592 == 51_806_208
    # One 8K session: 8,192 x 16 KiB = 128 MiB of KV + 49.4 MiB of state = 177.4 MiB.
    assert shape.sequence_bytes(8192) == 8192 * 16_384 + 51_806_208
    # 1 GiB holds one session of (1 GiB - 51,806,208) / 16 KiB = 62,374 tokens.
    assert shape.tokens_in(GIB) == (GIB - 51_806_208) // 16_384 == 62_374


def test_sliding_window_layers_hold_the_window(tmp_path: Path) -> None:
    # Gemma 3's text_config style: 5 sliding layers per global one, window 1024 (google/gemma-3-4b-it).
    types = (["sliding_attention"] * 5 + ["full_attention"]) * 2
    config: dict[str, dict[str, Any]] = {
        "text_config": {"num_hidden_layers": 12, "num_attention_heads": 8, "num_key_value_heads": 4}
    }
    config["text_config"] |= {"head_dim": 256, "sliding_window": 1024, "layer_types": types}
    shape = kv_shape(from_hf(tmp_path, config))
    assert (shape.full_layers, shape.window_layers, shape.window) == (2, 10, 1024)
    per_layer = 4 * (256 + 256) * 2  # 4 KiB per token per layer
    # 8K tokens: the 2 global layers keep all 8,192, the 10 sliding ones 1,024 each.
    assert shape.sequence_bytes(8192) == (2 * 8192 + 10 * 1024) * per_layer
    # Beyond the window only the global layers grow.
    room = (2 * 8192 + 10 * 1024) * per_layer
    assert shape.tokens_in(room) == 8192


def seed_config(elastic_on_gpu: bool, **orchestrator: Any) -> StacksConfig:
    """The blog's RTX 5090 (32 GiB, 3 GiB for Windows): a vLLM orchestrator that takes
    ${GPU_MEMORY_UTILIZATION}, embeddings, vision/FLUX swapping, a 1.6 GiB speech model (ours), and
    the elastic model: a 1.6 GiB slice on the GPU, or the 12B on the CPU (Ollama)."""
    command = ["--gpu-memory-utilization", "${GPU_MEMORY_UTILIZATION}"]
    # Nemotron-Orchestrator-8B is a Qwen3-8B fine-tune (Qwen/Qwen3-8B config.json: 36 layers,
    # 8 KV heads, head_dim 128); fp8 KV. Weights: 8.19 B parameters in FP8 with the 1.24 B of
    # embeddings and LM head in bf16 = 9.44 GB = 8.79 GiB, plus 0.6 GiB of activations.
    arch: dict[str, Any] = {"layers": 36, "kv_heads": 8, "head_dim": 128, "kv_dtype_bytes": 1}
    arch |= {"weights_gb": 8.79, "overhead_gb": 0.6, "context_tokens": 40960, **orchestrator}
    models: dict[str, Any] = {
        "orchestrator-8b": gpu_model(
            "orch", 12.8, docker={"container": "orch", "spec": {"image": "vllm", "command": command}}
        )
        | {"architecture": arch},
        "embeddings": gpu_model("embed", 1),
        "vision": gpu_model("vision", 8, lifecycle="on_demand", swap_group="gpu-swap"),
        "flux": gpu_model("flux", 12, lifecycle="on_demand", swap_group="gpu-swap"),
        "speech": gpu_model("speech", 1.6),
    }
    models["elastic"] = (
        gpu_model("elastic", 1.6)
        if elastic_on_gpu
        else {
            "runtime": "ollama",
            "placement": "cpu",
            "api": "ollama",
            "memory_gb": 8,
            "ollama": {"tag": "nemotron-elastic:12b", "options": {"num_gpu": 0}},
        }
    )
    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "gpu": {"total_gb": 32, "reserve_gb": 3},
            "roles": {"orchestrator": {"required": True}},
            "models": models,
            "stacks": {"s": {"roles": {"orchestrator": "orchestrator-8b"}, "members": list(models)[1:]}},
        }
    )


def test_seed_utilization_bump_and_kv_gain() -> None:
    """The seed: "we bumped the orchestrator from 0.40 to 0.45 utilization — a 47% increase in KV
    cache". The blog gives the card and the two utilizations; the planner finds them from the
    ledger. It does not give the orchestrator's non-KV footprint: the 9.39 GiB above is ours (FP8
    weights of a Qwen3-8B + activations), and with it the KV gain is the blog's +47%."""
    before = plan_switch(seed_config(True), ObservedState(), "s", fixed(32))
    after = plan_switch(seed_config(False), ObservedState(), "s", fixed(32))
    (row_before,), (row_after,) = before.kv, after.kv
    # Others on the card: 3 reserve + 1 embeddings + 12 (FLUX, the swap group's largest) + 1.6
    # speech = 17.6 GiB, + 1.6 with the elastic slice on the GPU: the orchestrator's room is
    # 32 - 19.2 = 12.8 GiB with it, 32 - 17.6 = 14.4 GiB without.
    assert row_before.gpu_memory_utilization == 0.40  # 12.8 / 32
    assert row_after.gpu_memory_utilization == 0.45  # 14.4 / 32
    # KV room = util x 32 GiB - weights - overhead, in MiB: 13,107 - 9,001 - 614 = 3,492, then
    # 14,746 - 9,001 - 614 = 5,131 (12.8 - 9.39 = 3.41 GiB, 14.4 - 9.39 = 5.01 GiB).
    assert row_before.kv_mib == round(0.40 * 32768) - round(8.79 * 1024) - round(0.6 * 1024) == 3492
    assert row_after.kv_mib == round(0.45 * 32768) - round(8.79 * 1024) - round(0.6 * 1024) == 5131
    assert row_after.kv_mib / row_before.kv_mib == pytest.approx(1.47, abs=0.005)  # "+47%"
    # 36 x 8 x 256 x 1 byte = 72 KiB per token: 5,131 MiB / 72 KiB = 72,974 tokens.
    assert row_after.kv_bytes_per_token == 36 * 8 * 256 * 1 == 73_728
    assert row_after.kv_tokens == 5131 * MIB // 73_728 == 72_974
    sessions = dict(row_after.sessions)
    assert sessions[40960] == round(5131 * MIB / (40960 * 73_728), 2) == 1.78
    assert sessions[4096] == round(5131 * MIB / (4096 * 73_728), 2) == 17.82
    assert before.feasible and after.feasible


def test_kv_room_below_one_context_is_refused_with_the_numbers() -> None:
    # The seed's "quantized 12B (8 GB but only 0.77 GB left for KV cache — literally unusable)":
    # here the orchestrator asks for Llama 3.1 8B's full 128K context (16 GiB at bf16).
    arch = {"layers": 32, "kv_heads": 8, "head_dim": 128, "kv_dtype_bytes": 2, "context_tokens": 131072}
    plan = plan_switch(seed_config(True, **arch), ObservedState(), "s", fixed(32))
    assert not plan.feasible
    (refusal,) = [r for r in plan.refusals if r.code == "kv"]
    assert refusal.model == "orchestrator-8b"
    # 128 KiB per token; room 3,492 MiB holds 3,492 x 8 = 27,936 tokens.
    assert plan.kv[0].kv_tokens == 27_936
    for text in ("27,936 tokens", "131,072 tokens", "16.00 GiB", "128 KiB per token", "0.40", "8.79 GiB"):
        assert text in refusal.message, (text, refusal.message)
    assert "context_tokens" in refusal.message  # the fix


def test_a_member_without_the_macro_keeps_its_budget() -> None:
    config = seed_config(False)
    orch = config.models["orchestrator-8b"]
    assert orch.docker is not None and orch.docker.spec is not None
    spec = orch.docker.spec.model_copy(update={"command": ["--gpu-memory-utilization", "0.4"]})
    docker = orch.docker.model_copy(update={"spec": spec})
    models = dict(config.models) | {"orchestrator-8b": orch.model_copy(update={"docker": docker})}
    plan = plan_switch(config.model_copy(update={"models": models}), ObservedState(), "s", fixed(32))
    (row,) = plan.kv
    assert row.gpu_memory_utilization is None
    assert row.room_mib == round(12.8 * 1024)  # its ledger line, not the headroom


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"layers": 32, "kv_heads": 8}, "architecture needs head_dim"),
        (
            {"layers": 3, "kv_heads": 1, "head_dim": 64, "hybrid_pattern": "M*"},
            "hybrid_pattern has 2 letters",
        ),
        ({"layers": 2, "kv_heads": 1, "head_dim": 64, "hybrid_pattern": "M*"}, "add a 'mamba:' section"),
        ({"layers": 2, "kv_heads": 1, "head_dim": 64, "attention_layers": [2]}, "outside 0..1"),
        ({"gguf": "a.gguf", "hf_config": "c.json"}, "keep gguf or hf_config"),
    ],
)
def test_bad_architecture_sections_say_how_to_fix(section: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace("'", "'")):
        Architecture.model_validate(section)


def test_a_missing_file_is_a_config_problem_at_its_line(tmp_path: Path) -> None:
    from stackd.config.loader import check_file

    file = tmp_path / "stacks.yaml"
    file.write_text(
        "default_stack: s\nroles: {orchestrator: {required: true}}\nmodels:\n  m:\n"
        "    runtime: docker\n    placement: gpu\n    api: openai\n    endpoint: http://127.0.0.1:1/v1\n"
        "    docker: {container: m}\n    architecture:\n      gguf: missing.gguf\n"
        "stacks:\n  s: {roles: {orchestrator: m}}\n"
    )
    (problem,) = check_file(file, env={})
    assert problem.line == 10 and problem.path == "models.m.architecture"
    assert "missing.gguf not found" in problem.message and "relative to the config file" in problem.fix


def test_the_command_takes_the_computed_utilization() -> None:
    from stackd.planner.kv import fill_utilization

    config = seed_config(False)
    plan = plan_switch(config, ObservedState(), "s", fixed(32))
    filled = fill_utilization(config, plan.kv, plan.vram).models["orchestrator-8b"]
    assert filled.docker is not None and filled.docker.spec is not None
    assert filled.docker.spec.command == ["--gpu-memory-utilization", "0.45"]
    # A plan without the member's row (a lease's): its ledger line's share of the card, rounded
    # down: 12.8 GiB = 13,107 MiB (of 13,107.2), / 32,768 MiB = 0.39997 -> 0.39.
    fallback = fill_utilization(config, (), plan.vram).models["orchestrator-8b"]
    assert fallback.docker is not None and fallback.docker.spec is not None
    assert fallback.docker.spec.command == ["--gpu-memory-utilization", "0.39"]


def test_the_macro_is_not_an_environment_variable_and_plan_shows_the_table(tmp_path: Path) -> None:
    from rich.console import Console

    from stackd.cli.offline import offline_plan
    from stackd.cli.render import plan_renderable

    file = tmp_path / "stacks.yaml"
    file.write_text(
        "default_stack: s\nroles: {orchestrator: {required: true}}\ngpu: {total_gb: 32}\nmodels:\n  vllm:\n"
        "    runtime: process\n    placement: gpu\n    api: openai\n    memory_gb: 16\n"
        '    process: {command: [vllm, serve, --gpu-memory-utilization, "${GPU_MEMORY_UTILIZATION}"]}\n'
        "    architecture: {layers: 32, kv_heads: 8, head_dim: 128, weights_gb: 15, context_tokens: 8192}\n"
        "stacks:\n  s: {roles: {orchestrator: vllm}}\n"
    )
    data = offline_plan(file, "s")
    (row,) = data["kv"]
    # Nothing else on the card: the whole 32 GiB (util 1.00) minus 15 + 1 GiB = 16 GiB of KV,
    # 16 GiB / 128 KiB = 131,072 tokens; 16 sessions of 8K (1 GiB each).
    assert row["gpu_memory_utilization"] == 1.0 and row["kv_tokens"] == 131_072
    assert dict((c, n) for c, n in row["sessions"])[8192] == 16.0
    console = Console(width=160, record=True)
    console.print(plan_renderable(data))
    text = console.export_text()
    assert "KV cache" in text and "128 KiB" in text and "131,072" in text and "1.00" in text


def test_unreadable_or_incomplete_files_say_which_and_how(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a gguf at all")
    with pytest.raises(ValueError, match=r"model.gguf is not a readable GGUF file .*point gguf: at a .gguf"):
        fill_architecture(Architecture(gguf="model.gguf"), tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a readable JSON file"):
        fill_architecture(Architecture(hf_config="config.json"), tmp_path)
    # A config.json without num_hidden_layers: the field is named, and where to set it.
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 8, "hidden_size": 1024}))
    with pytest.raises(ValueError, match=r"config\.json does not say layers"):
        fill_architecture(Architecture(hf_config="config.json"), tmp_path)
    arch = fill_architecture(Architecture(hf_config="config.json", layers=4), tmp_path)
    assert (arch.layers, arch.kv_heads, arch.head_dim) == (4, 8, 128)  # 1024 / 8


def test_a_hybrid_gguf_header_marks_its_recurrent_layers(tmp_path: Path) -> None:
    """llama.cpp writes a hybrid's per-layer head_count_kv (0: no KV) and feed_forward_length (0
    with no KV: a Mamba layer); a header written with gguf's own writer, no tensors."""
    import gguf

    path = tmp_path / "hybrid.gguf"
    writer = gguf.GGUFWriter(path, "nemotron_h")
    writer.add_block_count(6)
    writer.add_context_length(4096)
    writer.add_head_count(8)
    writer.add_head_count_kv([0, 0, 2, 0, 0, 2])
    writer.add_feed_forward_length([0, 1024, 0, 0, 1024, 0])
    writer.add_key_length(64)
    writer.add_value_length(64)
    writer.add_ssm_conv_kernel(4)
    writer.add_ssm_inner_size(256)
    writer.add_ssm_state_size(16)
    writer.add_ssm_group_count(2)
    writer.add_ssm_time_step_rank(8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    arch = fill_architecture(Architecture(gguf=str(path)), tmp_path)
    assert arch.hybrid_pattern == "M-*M-*"
    shape = kv_shape(arch)
    # 2 attention layers x 2 heads x (64 + 64) x 2 bytes = 1 KiB per token.
    assert (shape.full_layers, shape.mamba_layers, shape.bytes_per_token) == (2, 2, 2 * 2 * 128 * 2)
    # Mamba state in f32 (llama.cpp): conv 3 x (256 + 2 x 2 x 16) = 960, ssm 256 x 16 = 4,096
    # elements; (960 + 4,096) x 4 bytes = 20,224 bytes per layer, x 2 layers.
    assert arch.mamba is not None and arch.mamba.bytes_per_sequence == 20_224
    assert shape.mamba_bytes == 2 * 20_224
