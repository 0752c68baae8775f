"""Switch time on a Docker Swarm against local Docker, for the same members (issue 18).

    python bench/swarm_switch.py [--rounds 3] [--out results.json]

Needs root, iproute2 and the shared test engine with the demo image (``eval "$(scripts/dockerd-test
start)"; scripts/build-demo-image``). Builds the test swarm of tests/integration/swarm_cluster.py
(3 nodes, one dockerd per network namespace, node 2 with the one GPU as a generic resource), and
runs the real daemon (``build_app``, in-process, no periodic jobs) twice on the same four stacks
of tests/integration/swarm_world.py (six demo-image members, 2 per stack):

- ``swarm``: each member a service pinned to its node; endpoints at the node's address;
- ``local``: the same members as containers of the engine at DOCKER_HOST, on a budgeted card.

Each round is the tour alpha -> beta -> gamma -> delta -> alpha (every kind of change: a GPU
handover with a moving orchestrator, a GPU member leaving, CPU members moving node). Per switch:
the client's wall time, and each start / stop step as the driver took it. The two engines
alternate round by round so that the machine's load hits both alike. The swarm is torn down at
the end and must leave nothing behind.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.demo_daemon import serve_in_process  # noqa: E402
from tests.integration.swarm_cluster import swarm_cluster  # noqa: E402
from tests.integration.swarm_world import STACKS, SwarmWorld, write_config  # noqa: E402

TOUR = (*STACKS, STACKS[0])
Samples = dict[str, list[float]]


def timed(
    fn: Callable[[str, Any], Awaitable[None]], key: str, samples: Samples
) -> Callable[[str, Any], Awaitable[None]]:
    async def wrapper(name: str, model: Any) -> None:
        started = time.perf_counter()
        await fn(name, model)
        samples[key].append(time.perf_counter() - started)

    return wrapper


async def one_round(world: SwarmWorld, state: Path, engine: str, samples: Samples) -> None:
    async with serve_in_process(world.path, state) as daemon:
        containers: Any = daemon.services.manager.containers
        driver = containers.swarm if engine == "swarm" else containers
        driver.ensure_running = timed(driver.ensure_running, f"{engine} start step", samples)
        driver.ensure_stopped = timed(driver.ensure_stopped, f"{engine} stop step", samples)
        for previous, target in itertools.pairwise(TOUR):
            started = time.perf_counter()
            switch = await daemon.switch(target)
            took = time.perf_counter() - started
            if switch["state"] != "succeeded":
                raise SystemExit(f"{engine} {previous} -> {target}: {switch['error']}")
            samples[f"{engine} switch {previous} -> {target}"].append(took)
            samples[f"{engine} switch (all)"].append(took)


def remove_local(prefix: str = "bl-") -> None:
    client = docker.from_env()
    try:
        for container in client.containers.list(all=True):
            if container.name.startswith(prefix):
                container.remove(force=True)
    finally:
        client.close()


async def run(rounds: int) -> Samples:
    samples: Samples = defaultdict(list)
    with swarm_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        swarm_world = write_config(cluster, Path(tmp) / "swarm.yaml")
        local_world = write_config(cluster, Path(tmp) / "local.yaml", local=True)
        try:
            for i in range(rounds):
                order = ("swarm", "local") if i % 2 == 0 else ("local", "swarm")
                for engine in order:
                    world = swarm_world if engine == "swarm" else local_world
                    await one_round(world, Path(tmp) / f"state-{engine}-{i}", engine, samples)
                    if engine == "swarm":
                        swarm_world.remove_services()
                    else:
                        remove_local()
        finally:
            remove_local()
    return samples


def table(samples: Samples) -> str:
    rows = ["| | swarm median (min-max) | local median (min-max) | swarm / local |", "|---|---|---|---|"]
    keys = sorted({k.split(" ", 1)[1] for k in samples}, key=lambda k: (not k.startswith("switch"), k))
    for key in keys:
        swarm, local = samples.get(f"swarm {key}", []), samples.get(f"local {key}", [])
        if not swarm or not local:
            continue
        s, lo = statistics.median(swarm), statistics.median(local)
        rows.append(
            f"| {key} (n={len(swarm)}) | {s * 1000:,.0f} ms ({min(swarm) * 1000:,.0f}-{max(swarm) * 1000:,.0f}) "
            f"| {lo * 1000:,.0f} ms ({min(local) * 1000:,.0f}-{max(local) * 1000:,.0f}) | {s / lo:.2f}x |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[0]
    samples = asyncio.run(run(args.rounds))
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[0]
    print(f"rounds: {args.rounds}, load average {load_before} -> {load_after}")
    print(table(samples))
    if args.out:
        args.out.write_text(json.dumps(samples, indent=2))


if __name__ == "__main__":
    main()
