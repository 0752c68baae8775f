"""Idle connections against the daemon's HTTP settings and against uvicorn's defaults.

    python bench/slow_clients.py [--connections 1100] [--fd-limit 1024] [--deadline 1]

Starts ``tests/integration/slow_client_server.py`` twice under a hard descriptor limit (so it
cannot raise it): once with ``stackd.api.http_server.server_config`` and a request deadline of
``--deadline`` seconds, once with uvicorn's defaults. Each time it opens ``--connections`` TCP
connections that send nothing, counts the descriptors the server holds, and times how long
``GET /healthz`` takes to answer 200 (tries every 50 ms, for at most 10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(mode: str, connections: int, fd_limit: int, deadline_s: float) -> str:
    port = free_port()
    command = [sys.executable, "-m", "tests.integration.slow_client_server", str(port), str(deadline_s)]
    server = subprocess.Popen(
        [*command, *(["plain"] if mode == "uvicorn defaults" else [])],
        cwd=ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit)),
    )
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        for _ in range(400):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, timeout=1)
                break
            time.sleep(0.05)
        socks = []
        for _ in range(connections):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            socks.append(s)
        time.sleep(0.5)
        held = len(list(Path(f"/proc/{server.pid}/fd").iterdir()))
        started, tries = time.monotonic(), 0
        answered = None
        while time.monotonic() - started < 10:
            tries += 1
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    answered = time.monotonic() - started
                    break
            time.sleep(0.05)
        for s in socks:
            s.close()
        when = f"{answered:.2f} s" if answered is not None else "never (10 s)"
        return f"| {mode} | {connections} | {held} | {when} | {tries} |"
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--fd-limit", type=int, default=1024)
    parser.add_argument("--deadline", type=float, default=1.0)
    args = parser.parse_args()
    print("| server | idle connections | descriptors held | /healthz 200 after | tries |")
    print("| --- | --- | --- | --- | --- |")
    for mode in ("stackd's settings", "uvicorn defaults"):
        print(run(mode, args.connections, args.fd_limit, args.deadline), flush=True)


if __name__ == "__main__":
    main()
