"""Start-up: daemon start to ``/healthz``, ``stackd config check`` and ``stackd plan``, wall and CPU time.

    python bench/startup.py [--runs 10] [--out results.json] [--base REV]

1. **daemon → /healthz**: ``stackd serve`` (the venv's console script, as a person runs it) on the
   bundled config with the scripted RTX 5090 (``--gpu-scenario``), no Docker and no Ollama reachable,
   in a fresh state dir each run: a bare machine's first start, which walks the fallback stacks
   and lands on ``embedded`` (one llama.cpp engine). ``/healthz`` answers once that start is done;
   it is polled every 5 ms on a raw socket from the moment of the spawn. **Engines excluded**
   subtracts the engine steps the daemon logged (``start_process``, ``start_container``,
   ``load_model`` that succeeded: the engine's own load and warm-up). The daemon's CPU time (user +
   system, from ``/proc``) is read at the first answer; then SIGTERM.
   **daemon, nothing to start**: the same, on a copy of the bundled config without
   ``fallback_stacks``: the default stack's first switch fails at once (no Docker), nothing is
   started, and ``/healthz`` answers when the daemon's own start-up is done.
2. **config check**: ``stackd config check config/model-stacks.yaml``.
3. **plan**: ``stackd plan elastic-hybrid --gpu-scenario config/examples/gpu-rtx5090.yaml`` (offline,
   no daemon).

Each command runs once to warm the page cache and the bytecode cache, then ``--runs`` times;
medians, fastest and slowest. The commands run with ``PYTHONPYCACHEPREFIX`` in a temporary dir and
bytecode writing on, as an installed stackd runs: with ``PYTHONDONTWRITEBYTECODE`` set (as in this
project's shared checkout) every edited module would be compiled again at every start (0.7 s of
CPU for ~150 modules, measured with cProfile under load).
The CPU time of the short commands comes from ``wait4``'s rusage. On a shared machine the wall
times move with the load (printed before and after); the CPU time moves much less, and the fastest
wall time is the nearest to an idle machine's.

``--base REV`` times revision REV too (checked out in a temporary git worktree, run from it with
``PYTHONPATH`` on it): each case runs base, this, this, base, … so that both meet the same
neighbours, and each row is printed for both (read the difference, not the absolute numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STACKD = str(Path(sys.executable).with_name("stackd"))
CONFIG = "config/model-stacks.yaml"
SCENARIO = "config/examples/gpu-rtx5090.yaml"
TICKS = os.sysconf("SC_CLK_TCK")
ENGINE_STEP = re.compile(r": (?:start_process|start_container|load_model) \S+ (?:\(\S+\) )?\(([\d.]+) s\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU time of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def healthz_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return conn.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def environment(tmp: Path, root: Path = ROOT) -> dict[str, str]:
    """``root``: the checkout whose stackd runs (another one's is found first through
    ``PYTHONPATH``; ``python -m`` also puts the working directory, ``root``, first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if root != ROOT:
        env["PYTHONPATH"] = str(root)
    env.update(
        {
            "PYTHONPYCACHEPREFIX": str(tmp / "pycache" / root.name),
            "HOME": str(tmp),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        }
    )
    return env


def engine_steps_s(log: str) -> float:
    """The seconds the daemon's log gives to engine steps that succeeded."""
    return sum(float(m.group(1)) for line in log.splitlines() if (m := ENGINE_STEP.search(line)))


def without_fallbacks(tmp: Path, root: Path = ROOT) -> str:
    """A copy of the bundled config whose first start tries only its default stack."""
    text = (root / CONFIG).read_text()
    copy = tmp / f"no-fallbacks-{root.name}.yaml"
    copy.write_text(re.sub(r"(?m)^fallback_stacks:.*$", "fallback_stacks: []", text))
    return str(copy)


def daemon_run(tmp: Path, config: str = CONFIG, root: Path = ROOT) -> tuple[float, float, float]:
    """(wall s, wall s engines excluded, CPU s) from the spawn of ``stackd serve`` to its first
    ``/healthz`` 200."""
    port = free_port()
    state = Path(tempfile.mkdtemp(dir=tmp))
    argv = [STACKD, "serve", "--port", str(port), "--config", config, "--state-dir", str(state)]
    with (state / "daemon.log").open("wb") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, "--gpu-scenario", SCENARIO], cwd=root, env=environment(tmp, root), stdout=log, stderr=log
        )
        try:
            while not healthz_answers(port):
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon exited: {(state / 'daemon.log').read_text()[-2000:]}")
                time.sleep(0.005)
            wall = time.perf_counter() - began
            cpu = cpu_s(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return wall, wall - engine_steps_s((state / "daemon.log").read_text()), cpu


def command_run(argv: list[str], tmp: Path, root: Path = ROOT) -> tuple[float, float, float]:
    """(wall s, wall s, CPU s) of one run of a short command, which must succeed."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=root, env=environment(tmp, root), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}")
    return wall, wall, usage.ru_utime + usage.ru_stime


def summary(samples: list[tuple[float, float, float]]) -> dict[str, float]:
    walls, net, cpus = ([s[i] for s in samples] for i in range(3))
    return {
        "wall_median_s": statistics.median(walls),
        "wall_min_s": min(walls),
        "wall_max_s": max(walls),
        "net_median_s": statistics.median(net),
        "net_min_s": min(net),
        "cpu_median_s": statistics.median(cpus),
        "cpu_min_s": min(cpus),
        "runs": len(samples),
    }


Run = Callable[[Path, Path], tuple[float, float, float]]  # (temporary dir, checkout) -> a sample

CASES: dict[str, Run] = {
    "daemon start → /healthz, bare machine's first start (lands on embedded)": lambda tmp, root: daemon_run(
        tmp, CONFIG, root
    ),
    "daemon start → /healthz, nothing to start (no fallback_stacks)": lambda tmp, root: daemon_run(
        tmp, without_fallbacks(tmp, root), root
    ),
    f"stackd config check {CONFIG}": lambda tmp, root: command_run(
        [STACKD, "config", "check", CONFIG], tmp, root
    ),
    f"stackd plan elastic-hybrid --gpu-scenario {SCENARIO}": lambda tmp, root: command_run(
        [STACKD, "plan", "elastic-hybrid", "--gpu-scenario", SCENARIO], tmp, root
    ),
}


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """``rev`` in a temporary git worktree of this checkout, removed afterwards."""
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / f"base-{rev}"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True, capture_output=True
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)],
                cwd=ROOT,
                check=False,
                capture_output=True,
            )


def interleaved(roots: list[Path], runs: int) -> Iterator[Path]:
    """Each root ``runs`` times, in the order a, b, b, a, a, b, … (one root: a, a, …)."""
    for i in range(runs):
        yield from roots if i % 2 == 0 else reversed(roots)


def measure(roots: list[Path], runs: int) -> dict[str, dict[Path, dict[str, float]]]:
    results: dict[str, dict[Path, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for label, case in CASES.items():
            samples: dict[Path, list[tuple[float, float, float]]] = {root: [] for root in roots}
            for root in roots:
                case(tmp, root)  # warm-up: the page cache holds the modules, as for a person's second call
            for root in interleaved(roots, runs):
                samples[root].append(case(tmp, root))
            results[label] = {root: summary(got) for root, got in samples.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--base", help="a revision to time too, interleaved with this checkout")
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.base:
        with checkout(args.base) as base:
            results = measure([base, ROOT], args.runs)
    else:
        results = measure([ROOT], args.runs)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} CPUs")
    print("wall clock: median, fastest, slowest; engines excluded: median, fastest; CPU: median, least")
    for label, rows in results.items():
        print(label)
        for root, row in rows.items():
            name = "this" if root == ROOT else f"base {args.base}"
            print(
                f"    {name:>12}: wall {row['wall_median_s']:.3f} {row['wall_min_s']:.3f} {row['wall_max_s']:.3f} s"
                f"   engines excluded {row['net_median_s']:.3f} {row['net_min_s']:.3f} s"
                f"   CPU {row['cpu_median_s']:.3f} {row['cpu_min_s']:.3f} s"
            )
    if args.out:
        body: dict[str, Any] = {
            "results": {label: rows[ROOT] for label, rows in results.items()},
            "load_before": load_before,
            "load_after": load_after,
        }
        if args.base:
            body["base"] = args.base
            body["base_results"] = {
                label: row for label, rows in results.items() for root, row in rows.items() if root != ROOT
            }
        args.out.write_text(json.dumps(body, indent=2) + "\n")


if __name__ == "__main__":
    main()
