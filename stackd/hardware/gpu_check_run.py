"""``scripts/gpu-check``: a daemon on real GPU processes, checked against NVML and nvidia-smi.

Needs an NVIDIA driver (libcuda.so.1, NVML, nvidia-smi) and what ``pip install -e .`` installs;
no internet, no model file, no Docker. The steps (docs/operations.md, "Checking a real GPU"):

1. calibrate: one ``cuda_engine --mib 0`` gives the CUDA context's own size on this card;
2. write a config: an always-on member and three on-demand ones (A 512, B 1536, C 1024 MiB),
   each a ``runtime: process`` cuda_engine declared at its allocation plus the context, and a
   card (``gpu.total_gb``) sized so that A, B and C do not fit together: C needs half of A's
   room more, so the cheapest eviction is A (the most recently used), not B (the least);
3. start ``stackd serve`` on it and compare its probe with NVML;
4. lease B then A, release both (they stay up, idle), and check each footprint per PID;
5. lease C: it must evict A alone and the card's used memory must move by C - A;
6. lease B and hold it with C, then ask for A (``wait_s``): it must queue, and be served once C's
   lease is released;
7. the daemon's ledger against ``nvidia-smi --query-compute-apps``.

The verdicts are the pure functions of ``gpu_check``; this module only gathers the readings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import httpx
import yaml

from stackd.hardware.gpu_check import (
    Check,
    check_eviction,
    check_footprint,
    check_ledger,
    check_probe,
    check_wait,
    context_overhead,
    exit_status,
    parse_compute_apps,
    render,
)
from stackd.hardware.types import GpuDevice, GpuProcess

MIB = 1024 * 1024
ALLOCATIONS = {"resident": 256, "a": 512, "b": 1536, "c": 1024}  # MiB each engine allocates
PAGE_MIB = 64  # declarations are rounded up to this: a budget is never below the measurement


class Unavailable(RuntimeError):
    """What this machine lacks for the check (exit 2: nothing was compared)."""


def read_nvml(index: int) -> GpuDevice:
    """The card as NVML reports it, read with pynvml directly (not stackd's reader)."""
    import pynvml

    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    processes = tuple(
        GpuProcess(int(p.pid), f"pid {p.pid}", int(p.usedGpuMemory or 0) // MIB)
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    )
    name = pynvml.nvmlDeviceGetName(handle)
    return GpuDevice(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        total_mib=int(memory.total) // MIB,
        used_mib=int(memory.used) // MIB,
        free_mib=int(memory.free) // MIB,
        processes=processes,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{proc.args!r} exited with status {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise Unavailable(f"{url} did not answer within {deadline_s:g} s")


@contextlib.contextmanager
def running(argv: list[str], url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run ``argv`` until the block ends (SIGTERM, then SIGKILL), once ``url`` answers; yields its PID."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_http(url, 90, proc)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def engine_argv(mib: int, port: str, name: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "stackd.sim.cuda_engine", "--port", port, "--mib", str(mib), "--name", name]


def budget_mib(allocated: int, overhead: int) -> int:
    return -(-(allocated + overhead) // PAGE_MIB) * PAGE_MIB


def write_config(path: Path, overhead: int, used_now: int, device: int) -> dict[str, int]:
    """The config of the check; returns each member's declared budget in MiB."""
    budgets = {name: budget_mib(mib, overhead) for name, mib in ALLOCATIONS.items()}
    room = budgets["resident"] + budgets["b"] + budgets["c"] + budgets["a"] // 2
    models: dict[str, dict[str, object]] = {}
    for name, mib in ALLOCATIONS.items():
        models[name] = {
            "runtime": "process",
            "placement": "gpu",
            "api": "openai",
            "memory_gb": budgets[name] / 1024,
            "lifecycle": "always_on" if name == "resident" else "on_demand",
            "health": {"path": "/health", "start_timeout_s": 60},
            "process": {"command": engine_argv(mib, "${PORT}", name, "${PYTHON}"), "stop_grace_s": 5},
        }
        if name != "resident":
            models[name]["idle_ttl_s"] = 3600  # idle members stay up: eviction has candidates
    config = {
        "version": 1,
        "default_stack": "gpu-check",
        "gpu": {"device": device, "total_gb": (used_now + room) / 1024, "reserve_gb": 0},
        "roles": {"orchestrator": {}},
        "models": models,
        "stacks": {"gpu-check": {"roles": {"orchestrator": "resident"}, "members": ["a", "b", "c"]}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return budgets


class _Process(TypedDict, total=False):
    pid: int | None
    state: str


class _Member(TypedDict, total=False):
    name: str
    measured_mib: int | None
    process: _Process | None


class _Device(TypedDict):
    total_mib: int
    free_mib: int


class _Gpu(TypedDict):
    devices: list[_Device]


class _Status(TypedDict):
    """What the check reads of ``GET /status``."""

    members: list[_Member]
    gpu: _Gpu


class _Lease(TypedDict):
    """What the check reads of a lease ``POST /leases`` granted."""

    id: str


class Daemon:
    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        self.engines: set[int] = set()  # every engine PID seen: stopped at the end if still alive

    def status(self) -> _Status:
        answer: _Status = self.client.get("/status").raise_for_status().json()
        return answer

    def members(self) -> dict[str, tuple[int, int | None]]:
        """Running process members: name -> (PID, measured MiB)."""
        out = {}
        for member in self.status()["members"]:
            process = member.get("process") or {}
            pid = process.get("pid")
            if pid and process.get("state") == "ready":
                out[member["name"]] = (int(pid), member.get("measured_mib"))
        self.engines.update(pid for pid, _ in out.values())
        return out

    def stop_leftovers(self) -> None:
        """The daemon stops its engines when it exits; one that outlived it would hold the card."""
        for pid in self.engines:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    def lease(self, model: str, wait_s: float = 60) -> _Lease:
        answer: _Lease = (
            self.client.post("/leases", json={"model": model, "ttl_s": 600, "wait_s": wait_s})
            .raise_for_status()
            .json()
        )
        return answer

    def release(self, lease: _Lease) -> None:
        self.client.delete(f"/leases/{lease['id']}").raise_for_status()

    def queued(self, model: str) -> bool:
        answer = self.client.get("/leases").raise_for_status().json()
        return any(w["model"] == model for w in answer["queue"])


def run_checks(work: Path, device: int) -> list[Check]:
    rows: list[Check] = []
    port = free_port()
    with running(
        engine_argv(0, str(port), "calibration"), f"http://127.0.0.1:{port}/health", work / "calibration.log"
    ) as pid:
        overhead = context_overhead(read_nvml(device), pid)
    if overhead is None:
        raise Unavailable("NVML does not attribute memory to processes here (WDDM or a container?)")
    config = work / "gpu-check.yaml"
    write_config(config, overhead, read_nvml(device).used_mib, device)
    port, token = free_port(), secrets.token_urlsafe(24)
    env = {**os.environ, "STACKD_TOKEN": token}
    argv = [sys.executable, "-m", "stackd.cli", "serve", "--port", str(port), "--config", str(config)]
    argv += ["--state-dir", str(work / "state")]
    daemon = Daemon(f"http://127.0.0.1:{port}", token)
    try:
        with running(argv, f"http://127.0.0.1:{port}/healthz", work / "daemon.log", env):
            rows += _daemon_checks(daemon, device, overhead)
    finally:
        daemon.stop_leftovers()
    return rows


def _daemon_checks(daemon: Daemon, device: int, overhead: int) -> list[Check]:
    rows: list[Check] = []
    deadline = time.monotonic() + 120
    while "resident" not in daemon.members():
        if time.monotonic() > deadline:
            raise Unavailable("the daemon did not start the resident member within 120 s (see daemon.log)")
        time.sleep(0.5)
    gpu = daemon.status()["gpu"]["devices"][0]
    rows += check_probe(gpu["total_mib"], gpu["free_mib"], read_nvml(device))
    lease_b, lease_a = daemon.lease("b"), daemon.lease("a")  # A is the most recently used
    members, card = daemon.members(), read_nvml(device)
    for name in ("resident", "a", "b"):
        if name not in members:
            rows.append(
                Check(f"footprint: {name}", "its engine ready", "not running (see daemon.log)", False)
            )
            continue
        pid, measured = members[name]
        rows += check_footprint(name, pid, ALLOCATIONS[name], overhead, card, measured)
    daemon.release(lease_b)
    daemon.release(lease_a)
    before, pids_before = read_nvml(device), {n: p for n, (p, _) in daemon.members().items()}
    lease_c = daemon.lease("c")
    members, after = daemon.members(), read_nvml(device)
    rows += check_eviction(before, after, pids_before, {n: p for n, (p, _) in members.items()}, "a", "c")
    if "c" in members:
        rows += check_footprint("c", members["c"][0], ALLOCATIONS["c"], overhead, after, members["c"][1])
    rows += _waiting_lease(daemon, device, lease_c)
    smi = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    rows += check_ledger(daemon.members(), parse_compute_apps(smi))
    return rows


def _waiting_lease(daemon: Daemon, device: int, lease_c: _Lease) -> list[Check]:
    """B and C leased: A can evict nothing and must wait until C's lease is released."""
    daemon.lease("b")
    granted: list[_Lease] = []
    answered_at: list[float] = []

    def ask() -> None:
        with contextlib.suppress(httpx.HTTPError):
            granted.append(daemon.lease("a", wait_s=60))
        answered_at.append(time.monotonic())

    asker = threading.Thread(target=ask)
    asker.start()
    queued = False
    for _ in range(50):
        queued = queued or daemon.queued("a")
        if queued:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # it stays queued while both are held
    released_at = time.monotonic()
    daemon.release(lease_c)
    asker.join(90)
    pid = daemon.members().get("a", (None, None))[0]
    at = answered_at[0] if answered_at else None
    return check_wait("a", queued, bool(granted), released_at, at, read_nvml(device), pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu-check", description="stackd against a real NVIDIA GPU")
    parser.add_argument("--device", type=int, default=0, help="NVML index (and CUDA ordinal) of the card")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (config, logs)")
    args = parser.parse_args(argv)
    try:
        import pynvml

        pynvml.nvmlInit()
        name = read_nvml(args.device).name
    except Exception as exc:  # ImportError, or pynvml's NVMLError_* (one class per code)
        print(f"gpu-check: cannot run: NVML: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="stackd-gpu-check-"))
    try:
        rows = run_checks(work, args.device)
    except (OSError, Unavailable, httpx.HTTPError, subprocess.CalledProcessError, pynvml.NVMLError) as exc:
        print(f"gpu-check: cannot run: {exc} (logs in {work})", file=sys.stderr)
        return 2
    print(render(rows, title=f"stackd gpu-check on {name} (device {args.device})"))
    if not args.keep and exit_status(rows) == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work directory: {work}")
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
