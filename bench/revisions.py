"""The gateway of two revisions in one run: ``--base REV`` (a git worktree) against this checkout.

Both daemons' apps are built as ``bench/gateway.py`` builds stackd's (``create_app`` over in-memory
engines, one uvicorn worker, a two-strategy chain) in front of the same simulators; wrk runs
alternate between them (base, this, this, base, ...) so that both meet the same neighbours on a
shared machine. Prints each run and the medians: read the ratio, not the absolute numbers.

    .venv/bin/python bench/revisions.py --base c9a17b8 [--rounds 4] [--duration 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g  # the harness beside this file


def base_server(stack: ExitStack, worktree: Path, sim: str, backup: str) -> str:
    port = g.free_port()
    command = [g.PYTHON, str(worktree / "bench" / "gateway.py"), "serve", "stackd", f"--port={port}"]
    proc = subprocess.Popen(
        [*command, f"--primary={sim}", f"--backup={backup}"],
        env={**os.environ, "PYTHONPATH": str(worktree)},
        cwd=worktree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(g.stop_process, proc)
    g.wait_listening(port)
    g.SERVER_PIDS[f"http://127.0.0.1:{port}"] = proc.pid  # its CPU time per request is read
    return f"http://127.0.0.1:{port}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare with (a commit, a tag)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating pairs at c=16 (half at c=1)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "-q", "--detach", str(worktree), args.base],
            check=True,
        )
        stack.callback(
            subprocess.run, ["git", "-C", str(root), "worktree", "remove", "--force", str(worktree)]
        )
        sim, backup = g.start_sim(stack), g.start_sim(stack)
        servers = {
            "base": base_server(stack, worktree, sim, backup),
            "this": g.start_server(stack, "stackd", primary=sim, backup=backup),
        }
        for connections, rounds in ((16, args.rounds), (1, max(1, args.rounds // 2))):
            for url in servers.values():
                g.wrk(f"{url}/v1/chat/completions", g.BODY, connections, 1)  # warm pools and paths
            for i in range(rounds):
                order = ("base", "this") if i % 2 == 0 else ("this", "base")
                for name in order:
                    result = g.wrk(f"{servers[name]}/v1/chat/completions", g.BODY, connections, args.duration)
                    results.setdefault((name, connections), []).append(result)
                    print(
                        g.ROW.format(
                            label=f"{name} ({args.base if name == 'base' else 'checkout'})",
                            conns=f"c={connections}",
                            **result,
                        ),
                        flush=True,
                    )
    for connections in (16, 1):
        med: dict[str, dict[str, Any]] = {
            name: {
                k: statistics.median(r[k] for r in results[(name, connections)])
                for k in ("p50_ms", "p99_ms", "rps", "cpu_us")
            }
            for name in ("base", "this")
        }
        b, t = med["base"], med["this"]
        print(
            f"c={connections} medians, base / this: p50 {b['p50_ms']:.2f} / {t['p50_ms']:.2f} ms, "
            f"p99 {b['p99_ms']:.2f} / {t['p99_ms']:.2f} ms, {b['rps']:.0f} / {t['rps']:.0f} req/s "
            f"({t['rps'] / b['rps']:.2f}x), CPU {b['cpu_us']:.0f} / {t['cpu_us']:.0f} us/req"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
