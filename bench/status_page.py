"""What an open status page costs the daemon: its CPU with 0, 1 and N followers of the stream.

    python bench/status_page.py [--followers 1,10] [--seconds 20]

Starts ``stackd serve --no-periodic`` on a bare machine (the embedded stack, SmolLM2-135M-Instruct on
llama.cpp's server, the RTX 5090 scenario) in a temporary home, waits for its active stack,
then for each count of followers opens that many ``GET /status/events`` streams (httpx, no
browser), counts the ``status`` events they receive over ``--seconds`` and reads the daemon's
CPU time (psutil, the daemon process only: not its engine) over the same window. One row per
count: daemon CPU %, events per follower per second, bytes of one snapshot. All followers share
one producer (``stackd.api.page.StatusFeed``), so N followers should cost about what one does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import STACKD, free_port  # noqa: E402
from tests.e2e.test_embedded_stack import bare_machine_env, wait_for_active  # noqa: E402


def follow(url: str, stop: threading.Event, counts: list[int], sizes: list[int], index: int) -> None:
    with httpx.stream("GET", f"{url}/status/events", timeout=30) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                counts[index] += 1
                sizes.append(len(line) - len("data: "))
            if stop.is_set():
                return


def measure(url: str, daemon: psutil.Process, followers: int, seconds: float) -> tuple[float, float, int]:
    stop = threading.Event()
    counts = [0] * followers
    sizes: list[int] = []
    threads = [
        threading.Thread(target=follow, args=(url, stop, counts, sizes, i), daemon=True)
        for i in range(followers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(2.0)  # the streams are open and the first snapshot sent
    start_counts = list(counts)
    cpu = daemon.cpu_times()
    begun = time.monotonic()
    time.sleep(seconds)
    used = daemon.cpu_times()
    elapsed = time.monotonic() - begun
    events = sum(counts) - sum(start_counts)
    stop.set()
    for thread in threads:
        thread.join(35)  # each ends at its next event (at most a keepalive away)
    cpu_s = (used.user + used.system) - (cpu.user + cpu.system)
    per_follower = events / followers / elapsed if followers else 0.0
    return 100 * cpu_s / elapsed, per_follower, max(sizes, default=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--followers", default="1,10")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    counts = [0, *(int(n) for n in args.followers.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        home, port = Path(tmp), free_port()
        env = bare_machine_env(home, port)
        env["STACKD_GPU_SCENARIO"] = str(ROOT / "config" / "examples" / "gpu-rtx5090.yaml")
        log = home / "daemon.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*STACKD, "serve", "--no-periodic"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_active(url, proc, log)
            daemon = psutil.Process(proc.pid)
            print(f"stackd {url}, embedded stack, {os.cpu_count()} CPUs, {args.seconds:g} s per row")
            print(f"{'followers':>9} | {'daemon CPU %':>12} | {'events/s each':>13} | {'snapshot bytes':>14}")
            for n in counts:
                cpu, rate, size = measure(url, daemon, n, args.seconds)
                print(f"{n:>9} | {cpu:>12.2f} | {rate:>13.2f} | {size if n else '-':>14}")
            status = httpx.get(f"{url}/status", timeout=10).json()
            print(f"(/status body: {len(json.dumps(status))} bytes)")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
