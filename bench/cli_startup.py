"""How long a person waits for the CLI: ``stackd --version`` and ``stackd status``, wall clock.

    python bench/cli_startup.py [--runs 20]

hyperfine's method without hyperfine: two warm-up runs, then ``--runs`` runs of each command,
one after the other; prints the median, the fastest and the slowest, and the machine's load
average and CPU count (on a shared machine the load moves every figure; the fastest run is the
closest to an idle machine). ``stackd status`` asks a daemon started here: the README's
(bundled config, the scripted RTX 5090, ``--no-periodic``, no Docker), in a temporary state dir.
The console script of the venv this runs in is timed (``.venv/bin/stackd``), as a person runs it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import start_daemon, stop_daemon  # noqa: E402

STACKD = str(Path(sys.executable).with_name("stackd"))


def wall_times(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    for _ in range(2):  # warm-up: the page cache holds the modules, as for a person's second call
        subprocess.run(argv, env=env, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        begun = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - begun)
    return times


def row(name: str, times: list[float]) -> str:
    return (
        f"| `{name}` | {statistics.median(times) * 1000:.0f} | {min(times) * 1000:.0f} "
        f"| {max(times) * 1000:.0f} | {len(times)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = start_daemon(
            Path(tmp),
            "--gpu-scenario",
            "config/examples/gpu-rtx5090.yaml",
            "--no-periodic",
            env_extra={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
        )
        try:
            env = {**daemon.env, "COLUMNS": "100"}
            before = os.getloadavg()
            version = wall_times([STACKD, "--version"], env, args.runs)
            status = wall_times([STACKD, "status"], env, args.runs)
            after = os.getloadavg()
        finally:
            stop_daemon(daemon)
    print(f"{os.cpu_count()} CPUs; load average (1 min) {before[0]:.2f} before, {after[0]:.2f} after")
    print("| command | median ms | fastest ms | slowest ms | runs |")
    print("|---|---|---|---|---|")
    print(row("stackd --version", version))
    print(row("stackd status", status))


if __name__ == "__main__":
    main()
