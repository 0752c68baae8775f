"""What parts of the daemon's start cost, each in a fresh interpreter: CPU ms, median of ``--runs``.

    python bench/startup_parts.py [--runs 5]

Each part is timed with ``time.process_time`` after its own setup (what the daemon has imported
by then), so that a part's figure is its own; bytecode is written to a private
``PYTHONPYCACHEPREFIX`` (as ``bench/startup.py`` does) and one warm-up run precedes the runs. The parts are the ones issue 25's start-up work
moved out of the window before ``/healthz`` (docs/benchmarks.md, "Start-up"), and the ones left
in it that stackd does not own:

- the docker SDK, which a bare machine's first ``start_container`` imported before it asked the
  engine (``stackd/drivers/docker.py``: the client is asked first now);
- apscheduler's scheduler module (the periodic jobs'), now imported once the daemon serves;
- the bundled config's YAML, read by the pure-Python parser before, by libyaml's now;
- the cyclic collector while ``stackd.daemon`` is imported (off during the daemon's imports and
  app build now), and one full collection after it (``settle_heap``, once the daemon serves);
- the answer models of the OpenAPI document, imported when the document is first made now;
- left: aiohttp (the router's backends import it at module level) and ``pydantic.v1`` (which
  FastAPI imports at the first route with a parameter).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
YAML = "from stackd.config import yaml_source as y; t = open('config/model-stacks.yaml').read()"
PARTS = {
    "docker SDK import (docker, requests, urllib3)": (
        "import stackd.daemon, stackd.drivers.docker",
        "import docker.errors",
    ),
    "apscheduler's scheduler module (3 scans of every package's entry points)": (
        "import stackd.daemon, stackd.manager.day",
        "import apscheduler.schedulers.asyncio",
    ),
    "bundled config's YAML, pure-Python parser": (
        f"{YAML}; y.parse_yaml(t)",
        "y._parse_with(y._BoundedLoader(t))",
    ),
    "bundled config's YAML, libyaml's events + the bounded composer": (
        f"{YAML}; y.parse_yaml(t)",
        "y.parse_yaml(t)",
    ),
    "answer models of the OpenAPI document": (
        "import stackd.api.gateway, stackd.api.tool_args, stackd.api.answers",
        "import stackd.api.answer_models",
    ),
    "left: aiohttp, after FastAPI, uvicorn and the config models": (
        "import fastapi, uvicorn, uvicorn.config, stackd.config.models, yaml, sqlite3, psutil, attr, multidict",
        "import aiohttp",
    ),
    "left: pydantic.v1 (FastAPI's first route with a parameter)": (
        "import fastapi, stackd.config.models",
        "import pydantic.v1",
    ),
}
COLLECTOR = """
import gc, time
spent, began = [0.0], [0.0]
def timed(phase, info):
    if phase == "start":
        began[0] = time.process_time()
    else:
        spent[0] += time.process_time() - began[0]
gc.callbacks.append(timed)
import stackd.daemon
gc.callbacks.remove(timed)
began[0] = time.process_time()
gc.collect()
print(spent[0] * 1000, (time.process_time() - began[0]) * 1000)
"""


def run(code: str, env: dict[str, str]) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return [float(v) for v in done.stdout.split()]


def timed(code: str, env: dict[str, str], runs: int) -> list[list[float]]:
    run(code, env)  # warm-up: bytecode written, page cache warm
    return [run(code, env) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    pycache = tempfile.TemporaryDirectory()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache.name
    load_before = os.getloadavg()
    rows: dict[str, float] = {}
    for label, (setup, part) in PARTS.items():
        code = f"import time\n{setup}\nbegan = time.process_time()\n{part}\nprint((time.process_time() - began) * 1000)"
        rows[label] = statistics.median(r[0] for r in timed(code, env, args.runs))
    collector = timed(COLLECTOR, env, args.runs)
    rows["the cyclic collector while stackd.daemon is imported (default thresholds)"] = statistics.median(
        c[0] for c in collector
    )
    rows["one full collection once stackd.daemon is imported"] = statistics.median(c[1] for c in collector)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} CPUs")
    for label, ms in rows.items():
        print(f"{ms:7.1f} ms  {label}")


if __name__ == "__main__":
    main()
