"""Start-up: daemon start to ``/healthz``, ``stackd config check`` and ``stackd plan``, wall and CPU time.

    python bench/startup.py [--runs 10] [--out results.json]

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


def environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        {
            "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
            "HOME": str(tmp),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        }
    )
    return env


def engine_steps_s(log: str) -> float:
    """The seconds the daemon's log gives to engine steps that succeeded."""
    return sum(float(m.group(1)) for line in log.splitlines() if (m := ENGINE_STEP.search(line)))


def without_fallbacks(tmp: Path) -> str:
    """A copy of the bundled config whose first start tries only its default stack."""
    text = (ROOT / CONFIG).read_text()
    copy = tmp / "no-fallbacks.yaml"
    copy.write_text(re.sub(r"(?m)^fallback_stacks:.*$", "fallback_stacks: []", text))
    return str(copy)


def daemon_run(tmp: Path, config: str = CONFIG) -> tuple[float, float, float]:
    """(wall s, wall s engines excluded, CPU s) from the spawn of ``stackd serve`` to its first
    ``/healthz`` 200."""
    port = free_port()
    state = Path(tempfile.mkdtemp(dir=tmp))
    argv = [STACKD, "serve", "--port", str(port), "--config", config, "--state-dir", str(state)]
    with (state / "daemon.log").open("wb") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, "--gpu-scenario", SCENARIO], cwd=ROOT, env=environment(tmp), stdout=log, stderr=log
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


def command_run(argv: list[str], tmp: Path) -> tuple[float, float, float]:
    """(wall s, wall s, CPU s) of one run of a short command, which must succeed."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=environment(tmp), stdout=subprocess.DEVNULL)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cases: dict[str, Any] = {
        "daemon start → /healthz, bare machine's first start (lands on embedded)": daemon_run,
        "daemon start → /healthz, nothing to start (no fallback_stacks)": lambda tmp: daemon_run(
            tmp, without_fallbacks(tmp)
        ),
        f"stackd config check {CONFIG}": [STACKD, "config", "check", CONFIG],
        f"stackd plan elastic-hybrid --gpu-scenario {SCENARIO}": [
            STACKD,
            "plan",
            "elastic-hybrid",
            "--gpu-scenario",
            SCENARIO,
        ],
    }
    load_before = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for label, case in cases.items():
            once = (lambda c=case: c(tmp)) if callable(case) else (lambda c=case: command_run(c, tmp))
            once()  # warm-up: the page cache holds the modules, as for a person's second call
            results[label] = summary([once() for _ in range(args.runs)])
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} CPUs")
    print("wall clock: median, fastest, slowest; engines excluded: median, fastest; CPU: median, least")
    for label, row in results.items():
        print(
            f"{label}\n    wall {row['wall_median_s']:.3f} {row['wall_min_s']:.3f} {row['wall_max_s']:.3f} s"
            f"   engines excluded {row['net_median_s']:.3f} {row['net_min_s']:.3f} s"
            f"   CPU {row['cpu_median_s']:.3f} {row['cpu_min_s']:.3f} s"
        )
    if args.out:
        body = {"results": results, "load_before": load_before, "load_after": load_after}
        args.out.write_text(json.dumps(body, indent=2) + "\n")


if __name__ == "__main__":
    main()
