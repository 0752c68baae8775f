"""What each optional module would add to the daemon: RSS and CPU time of its import.

    python bench/module_memory.py [--runs 3]

For each module, ``--runs`` fresh interpreters first import what every daemon imports (``BASE``:
FastAPI, uvicorn, aiohttp, PyYAML, sqlite3, psutil, pydantic, the config models, the services),
then the module; printed: the median growth of the resident set (``/proc/self/statm``) and of the
process's CPU time over that one import, and how many modules it brought. The figures are each
module's share of a daemon that imported it at start; since issue 25 the daemon imports them
where they are first used (tests/unit/test_daemon_imports.py), so they are what an idle daemon
saves. Shared dependencies are counted with the first module that brings them (httpx with ollama).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "fastapi,uvicorn,aiohttp,yaml,sqlite3,psutil,pydantic,stackd.config.models,stackd.services"
MODULES = {
    "MCP SDK (server, streamable HTTP)": "mcp.server.lowlevel.server,mcp.server.streamable_http_manager",
    "docker SDK (+ requests, urllib3)": "docker",
    "ollama client (+ httpx, rich)": "ollama",
    "httpx alone (+ rich, pygments via httpx._main)": "httpx",
    "jsonschema (+ referencing, rpds)": "jsonschema",
    "gguf (+ numpy)": "gguf",
    "prometheus_client (exposition)": "prometheus_client",
    "apscheduler's AsyncIOScheduler": "apscheduler.schedulers.asyncio",
    "the CLI: stackd.cli.main (typer, rich's console)": "stackd.cli.main",
}
PROBE = r"""
import gc, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
for name in sys.argv[1].split(","):
    __import__(name)
gc.collect()
before, cpu, count = rss(), time.process_time(), len(sys.modules)
for name in sys.argv[2].split(","):
    __import__(name)
cpu = time.process_time() - cpu
gc.collect()
print(rss() - before, cpu, len(sys.modules) - count)
"""


def measure(modules: str, runs: int) -> tuple[float, float, int]:
    rows = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, BASE, modules], cwd=ROOT, capture_output=True, text=True, check=True
        )
        mib, cpu, count = done.stdout.split()
        rows.append((float(mib), float(cpu), int(count)))
    return (
        statistics.median(r[0] for r in rows),
        statistics.median(r[1] for r in rows),
        rows[0][2],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'module':52} {'RSS MiB':>8} {'CPU ms':>8} {'modules':>8}")
    for label, modules in MODULES.items():
        mib, cpu, count = measure(modules, args.runs)
        print(f"{label:52} {mib:8.1f} {cpu * 1000:8.0f} {count:8d}")


if __name__ == "__main__":
    main()
