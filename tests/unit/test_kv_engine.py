"""Sliding-window layers sized by the engine the member runs, read from its command.

Gemma 3 270M (its GGUF header: 18 layers, 1 KV head of 256 + 256, window 512, every sixth layer
global) costs 1 KiB per token in each layer, so every figure below is a count of cells:

* llama-cpp-python (``llama_cpp.server``): llama.cpp's library default keeps the 15 sliding layers
  at full size ("using full-size SWA cache"): 18 x n_ctx;
* llama.cpp without swa_full: ``pad(window x sequences + n_ubatch, 256)`` cells in a sliding layer
  (``llama-kv-cache-iswa.cpp``); llama-server runs 4 slots on one unified cache unless ``-np``;
* vLLM: the window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stackd.cli.offline import offline_plan
from stackd.cli.shapes import KvRow

KIB = 1024
GEMMA_3_270M = {
    "layers": 18,
    "kv_heads": 1,
    "head_dim": 256,
    "sliding_window": 512,
    "sliding_window_layers": [i for i in range(18) if i % 6 != 5],  # set_swa_pattern(6)
    "context_tokens": None,
}


def plan_row(tmp_path: Path, member: dict[str, Any], **arch: Any) -> KvRow:
    """The KV row of a one-member stack (CPU: no card needed); JSON is YAML."""
    architecture = {k: v for k, v in (GEMMA_3_270M | arch).items() if v is not None}
    model = {"placement": "cpu", "api": "openai", "memory_gb": 1, "architecture": architecture} | member
    config = {
        "default_stack": "s",
        "roles": {"orchestrator": {"required": True}},
        "models": {"m": model},
        "stacks": {"s": {"roles": {"orchestrator": "m"}}},
    }
    file = tmp_path / "stacks.yaml"
    file.write_text(json.dumps(config))
    (row,) = offline_plan(file, "s")["kv"]
    return row


def process(*args: str) -> dict[str, Any]:
    return {"runtime": "process", "process": {"command": list(args)}}


def docker(image: str, *args: str) -> dict[str, Any]:
    return {
        "runtime": "docker",
        "endpoint": "http://127.0.0.1:8000/v1",
        "docker": {"container": "m", "spec": {"image": image, "command": list(args)}},
    }


LLAMA_CPP_PYTHON = ("${PYTHON}", "-m", "llama_cpp.server", "--model", "${MODEL_PATH}")


def test_llama_cpp_python_keeps_sliding_layers_at_full_size(tmp_path: Path) -> None:
    row = plan_row(tmp_path, process(*LLAMA_CPP_PYTHON, "--n_ctx", "8192"))
    # The context comes from the command; all 18 layers hold 8,192 cells of 1 KiB: 144 MiB.
    assert row["context_tokens"] == 8192
    assert row["context_mib"] == 18 * 8192 * KIB / 2**20 == 144.0
    assert row["kv_rule"] == "llama.cpp (llama-cpp-python): full-size SWA"


def test_llama_cpp_python_without_n_ctx_allocates_its_default_2048(tmp_path: Path) -> None:
    row = plan_row(tmp_path, process(*LLAMA_CPP_PYTHON))
    assert row["context_tokens"] == 2048 and row["context_mib"] == 36.0  # 18 x 2,048 KiB
    # An explicit context_tokens wins over the command.
    assert plan_row(tmp_path, process(*LLAMA_CPP_PYTHON), context_tokens=1024)["context_mib"] == 18.0


def test_swa_full_off_keeps_the_window_and_one_micro_batch(tmp_path: Path) -> None:
    command = (*LLAMA_CPP_PYTHON, "--n_ctx", "2048", "--swa_full", "False", "--n_ubatch", "256")
    row = plan_row(tmp_path, process(*command))
    # Sliding layers: pad(512 + 256, 256) = 768 cells; global layers the 2,048.
    assert (3 * 2048 + 15 * 768) * KIB / 2**20 == 17.25
    assert row["context_mib"] == 17.2  # the row rounds to 0.1 MiB
    assert row["kv_rule"] == "llama.cpp (llama-cpp-python): SWA 512 + ubatch 256 = 768 cells"
    # architecture.swa_full says the same without the flag (n_ubatch back to 512: 1,024 cells).
    row = plan_row(tmp_path, process(*LLAMA_CPP_PYTHON, "--n_ctx", "2048"), swa_full=False)
    assert row["context_mib"] == (3 * 2048 + 15 * 1024) * KIB / 2**20 == 21.0


def test_llama_server_defaults_to_four_slots_on_one_cache(tmp_path: Path) -> None:
    row = plan_row(tmp_path, process("/opt/llama.cpp/bin/llama-server", "-m", "g.gguf", "-c", "8192"))
    # --swa-full off; auto parallel = 4 unified slots: pad(4 x 512 + 512, 256) = 2,560 cells.
    assert row["context_mib"] == (3 * 8192 + 15 * 2560) * KIB / 2**20 == 61.5
    assert row["kv_rule"] == "llama.cpp (llama-server): SWA 512 x 4 + ubatch 512 = 2,560 cells"
    # -np 2 without --kv-unified: a stream per slot, each pad(512 + 512) = 1,024 cells.
    row = plan_row(tmp_path, process("llama-server", "-c", "8192", "-np", "2", "-ub", "512"))
    assert row["context_mib"] == (3 * 8192 + 15 * 2048) * KIB / 2**20 == 54.0
    row = plan_row(tmp_path, process("llama-server", "-c", "8192", "--swa-full"))
    assert row["context_mib"] == 144.0 and row["kv_rule"].endswith("full-size SWA")


def test_vllm_keeps_the_window(tmp_path: Path) -> None:
    row = plan_row(tmp_path, docker("vllm/vllm-openai:latest", "--model", "g", "--max-model-len", "8K"))
    # 8K = 8,192 tokens in the 3 global layers, 512 in the 15 sliding ones: 31.5 MiB.
    assert row["context_tokens"] == 8192
    assert row["context_mib"] == (3 * 8192 + 15 * 512) * KIB / 2**20 == 31.5
    assert row["kv_rule"] == "vLLM: SWA window 512"


def test_an_engine_not_recognised_takes_the_window_unless_the_architecture_names_it(
    tmp_path: Path,
) -> None:
    member = docker("example/engine:1", "--ctx", "8192")
    row = plan_row(tmp_path, member, context_tokens=8192)
    assert row["context_mib"] == 31.5 and row["kv_rule"] == "vLLM (engine not recognised): SWA window 512"
    # kv_engine: llama.cpp brings llama.cpp's library default (full-size SWA).
    row = plan_row(tmp_path, member, context_tokens=8192, kv_engine="llama.cpp")
    assert row["context_mib"] == 144.0
    assert row["kv_rule"] == "llama.cpp (architecture.kv_engine): full-size SWA"


def test_a_model_without_a_window_names_its_engine_only(tmp_path: Path) -> None:
    row = plan_row(tmp_path, process(*LLAMA_CPP_PYTHON), sliding_window=None, sliding_window_layers=None)
    assert row["kv_rule"] == "llama.cpp (llama-cpp-python)" and row["context_mib"] == 36.0


def test_the_plan_table_names_each_rule_in_its_caption(tmp_path: Path) -> None:
    from rich.console import Console

    from stackd.cli.render import plan_renderable

    file = tmp_path / "stacks.yaml"
    plan_row(tmp_path, process(*LLAMA_CPP_PYTHON, "--n_ctx", "8192"))  # writes the file
    console = Console(width=100, record=True)
    console.print(plan_renderable(offline_plan(file, "s")))
    lines = console.export_text().splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.lstrip("│ ").startswith("m ")]
    caption = next(line for line in lines[at:] if "engine rule:" in line)
    assert "m: llama.cpp (llama-cpp-python): full-size SWA" in caption


@pytest.mark.parametrize("bad", ["--n_ctx", "--n_ctx=auto"])
def test_an_unreadable_flag_falls_back_to_the_engine_default(tmp_path: Path, bad: str) -> None:
    # A flag with no value (or one the engine will refuse at start) says nothing about the size.
    row = plan_row(tmp_path, process(*LLAMA_CPP_PYTHON, bad))
    assert row["context_tokens"] == 2048
