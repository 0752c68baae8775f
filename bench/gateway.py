"""Gateway benchmark: direct vs through stackd's /v1/chat/completions and /tools/reason, with wrk.

    python bench/gateway.py [--duration 5] [--out results.json]

Starts OpenAI simulators (zero added latency, one process each), stackd's app as the daemon
builds it (``create_app``: the front door, the control API, the tools and the gateway, the heap
settled after start-up) under uvicorn (one worker, subprocesses), the floor (the thinnest Python
proxy: raw ASGI + one aiohttp session) and a reference FastAPI + httpx pass-through; loads each
with wrk (1 thread, a Lua script for the POST body) at 1 and 16 connections, and prints p50 /
p99 / req/s and each proxy's CPU time per request, then stackd against the floor in alternating
pairs (req/s, p99 and CPU ratios at 16 connections, the p50 difference at 1). Failover rows: strategy 1 refuses connections
or answers 500 on every call (circuit threshold raised so that every call pays the failover),
and hangs (the circuit as configured: the first calls pay the first-token timeout, then the
open circuit skips it). docs/benchmarks.md has the method and the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI, Request, Response

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]
ROW = "{label:48} {conns:5} p50 {p50_ms:8.3f} ms  p99 {p99_ms:8.3f} ms  {rps:9.0f} req/s  CPU {cpu_us:5.0f} us/req"
BODY = {
    "model": "reason",
    "messages": [{"role": "user", "content": "Why is the sky blue?"}],
    "max_tokens": 16,
}
TOOLS_BODY = {"problem": "Why is the sky blue?", "max_tokens": 16}
TOKEN = "bench-token"  # stackd's rows send it: the data path's token check is part of the cost
AUTH_HEADER = {"Authorization": f"Bearer {TOKEN}"}
FLOOR = "floor: raw ASGI + aiohttp pass-through"
STACKD = "stackd /v1/chat/completions (reason)"


# ---------------------------------------------------------------- servers (subcommands)
def stackd_app(primary: str, backup: str, threshold: int, first_token_s: float) -> Any:
    """The daemon's app (``create_app``) over in-memory engines: only the data path is measured."""
    from contextlib import asynccontextmanager

    from stackd.api.app import create_app
    from stackd.config.models import StacksConfig
    from stackd.daemon import settle_heap
    from stackd.drivers.memory import (
        MemoryContainers,
        MemoryHealth,
        MemoryOllama,
        MemoryProcesses,
        MemoryRemotes,
    )
    from stackd.gpu.leases import LeaseCoordinator
    from stackd.hardware.types import HardwareSnapshot
    from stackd.manager import ModelStackManager
    from stackd.manager.seams import Drivers
    from stackd.roles import LiveRoles, RoleTable
    from stackd.router import ReasonRouter
    from stackd.services import Services
    from stackd.settings import Settings
    from stackd.state.keys import KeyedUsageStore, KeyStore
    from stackd.state.store import StateStore

    def model(url: str, name: str) -> dict[str, Any]:
        return {
            "runtime": "docker",
            "placement": "gpu",
            "api": "openai",
            "endpoint": f"{url}/v1",
            "served_model": name,
            "docker": {"container": name},
        }

    config = StacksConfig.model_validate(
        {
            "default_stack": "bench",
            "roles": {"orchestrator": {"required": True}},
            "models": {"primary": model(primary, "primary"), "backup": model(backup, "backup")},
            "stacks": {"bench": {"roles": {"orchestrator": "backup"}, "members": ["primary"]}},
            "reason": {
                "strategies": {"first": {"models": ["primary"]}, "second": {"models": ["backup"]}},
                "default_chain": ["first", "second"],
                "timeouts": {"connect_s": 2, "first_token_s": first_token_s, "total_s": 300},
                "circuit": {"failure_threshold": threshold, "cooldown_s": 600},
            },
        }
    )
    stack = config.stacks["bench"]
    roles = LiveRoles(RoleTable("bench", dict(stack.roles), frozenset(stack.member_names)))
    state_dir = Path(tempfile.mkdtemp(prefix="stackd-bench-"))
    # the usage ledger as the daemon has it (each call's rows and its key's, committed before the
    # answer): its SQLite writes are part of a call's cost
    keys = KeyStore(state_dir / "stackd.db")
    usage = KeyedUsageStore(state_dir / "stackd.db", keys)
    router = ReasonRouter(config, roles, usage=usage)
    hardware = HardwareSnapshot(
        gpus=(), ram_total_mib=8192, ram_available_mib=4096, cpu_count=2, gpu_source="none"
    )
    drivers = Drivers(MemoryContainers(), MemoryProcesses(), MemoryOllama(), MemoryRemotes(), MemoryHealth())
    manager = ModelStackManager(config, StateStore(state_dir / "stackd.db"), drivers, roles, lambda: hardware)
    services = Services(
        settings=Settings(state_dir=state_dir),
        roles=roles,
        manager=manager,
        read_hardware=lambda: hardware,
        token=TOKEN,
        token_source="bench",
        leases=LeaseCoordinator(manager),
        router=router,
        usage=usage,
        keys=keys,
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await router.start()
        settle_heap()  # as the daemon's lifespan does
        yield
        await router.aclose()
        await usage.aclose()  # its journal's files (on the tmpfs) go with it

    return create_app(services, lifespan=lifespan)


def floor_app(target: str) -> Any:
    """The thinnest Python proxy: raw ASGI, one pooled aiohttp session, the body passed through."""
    session: aiohttp.ClientSession | None = None
    url = f"{target}/v1/chat/completions"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            if session is not None:
                await session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if session is None:
            session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as reply:
            answer = await reply.read()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def reference_app(target: str) -> Any:
    """A bare FastAPI + httpx (default transport) pass-through: the reference row."""
    import httpx

    app = FastAPI()
    client = httpx.AsyncClient(base_url=target)

    @app.post("/v1/chat/completions")
    async def passthrough(request: Request) -> Response:
        reply = await client.post(
            "/v1/chat/completions", content=await request.body(), headers={"content-type": "application/json"}
        )
        return Response(reply.content, status_code=reply.status_code, media_type="application/json")

    return app


def serve(argv: list[str]) -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["stackd", "floor", "reference"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--primary", default="")
    parser.add_argument("--backup", default="")
    parser.add_argument("--threshold", type=int, default=3)
    parser.add_argument("--first-token-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.kind == "stackd":
        app = stackd_app(args.primary, args.backup, args.threshold, args.first_token_s)
    elif args.kind == "floor":
        app = floor_app(args.primary)
    else:
        app = reference_app(args.primary)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, ws="none")


# ---------------------------------------------------------------- harness
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s} s")


SERVER_PIDS: dict[str, int] = {}  # base URL -> the server's pid: its CPU time per request is read


def start(stack: ExitStack, args: list[str], port: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [PYTHON, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    stack.callback(stop_process, proc)
    wait_listening(port)
    SERVER_PIDS[f"http://127.0.0.1:{port}"] = proc.pid
    return f"http://127.0.0.1:{port}"


def cpu_ticks(pid: int) -> int:
    """User + system CPU of ``pid`` (all its threads), in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_sim(stack: ExitStack, fault: str = "none") -> str:
    port = free_port()
    code = f"from stackd.sim.runner import run_sim; run_sim('openai', '127.0.0.1', {port}, 0.0, {fault!r})"
    return start(stack, ["-c", code], port)


def start_server(stack: ExitStack, kind: str, **options: Any) -> str:
    port = free_port()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    return start(stack, [str(Path(__file__).resolve()), "serve", kind, f"--port={port}", *flags], port)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, body: dict[str, Any], connections: int, duration_s: int) -> dict[str, float]:
    """p50, p99, req/s, and ``cpu_us``: the proxy's CPU time per answered request (user + system,
    all threads; nan for a server this harness did not start): unlike req/s, it hardly moves
    with what else runs on the machine."""
    pid = SERVER_PIDS.get(url.split("/v1/")[0].split("/tools/")[0])
    before = cpu_ticks(pid) if pid else 0
    result = run_wrk(url, body, connections, duration_s)
    requests = result.pop("requests")
    if pid and requests:
        result["cpu_us"] = (cpu_ticks(pid) - before) / os.sysconf("SC_CLK_TCK") / requests * 1e6
    else:
        result["cpu_us"] = float("nan")
    return result


def run_wrk(url: str, body: dict[str, Any], connections: int, duration_s: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        script.write(f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')
        script.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(match.group(1)) * UNITS[match.group(2)] if match else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error answers\n{out}")
    return {
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": float(done.group(1)) if done else 0.0,
    }


async def hang_costs(url: str, calls: int) -> dict[str, float]:
    """Sequential calls through a hanging primary: what the first calls paid, then the steady p50."""
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(calls):
            started = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=BODY, headers=AUTH_HEADER) as reply:
                await reply.read()
                assert reply.status == 200, reply.status
            times.append((time.perf_counter() - started) * 1000)
    slow = [t for t in times if t > 100]
    rest = times[len(slow) :]
    return {
        "slow_calls": len(slow),
        "slow_ms_each": statistics.mean(slow) if slow else 0.0,
        "then_p50_ms": statistics.median(rest),
    }


OLLAMA_SIM = """
import asyncio
from stackd.sim.ollama import OllamaSim
async def main():
    async with OllamaSim(port={port}, pulled={{"m:1b": 1}}, record=False):
        await asyncio.Event().wait()
asyncio.run(main())
"""


async def ollama_data_path(url: str, duration_s: float) -> dict[str, dict[str, float]]:
    """The ``ollama`` package (httpx) vs stackd's Ollama backend on /api/chat, 16 concurrent callers."""
    import ollama

    from stackd.config.models import Model
    from stackd.router.backends.ollama import OllamaBackend
    from stackd.router.http_client import HttpClient
    from stackd.router.types import ChatRequest

    messages = [{"role": "user", "content": "hi"}]
    options = {"num_gpu": 0, "num_ctx": 2048}

    async def measure(call: Any) -> dict[str, float]:
        times: list[float] = []
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await call()
                times.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(16)))
        return {"rps": len(times) / duration_s, "p50_ms": statistics.median(times)}

    client = ollama.AsyncClient(host=url)
    with_client = await measure(
        lambda: client.chat("m:1b", messages=messages, options=options, keep_alive=-1)
    )
    model = Model.model_validate(
        {
            "runtime": "ollama",
            "placement": "cpu",
            "api": "ollama",
            "ollama": {"tag": "m:1b", "options": options},
        }
    )
    http = HttpClient(connect_s=5)
    backend = OllamaBackend("m", model, http, url)
    with_stackd = await measure(lambda: backend.complete(ChatRequest(messages)))
    await http.close()
    return {"ollama package (httpx)": with_client, "stackd OllamaBackend (its HttpClient)": with_stackd}


def against_the_floor(floor: str, stackd: str, pairs: int, duration_s: int) -> dict[str, Any]:
    """stackd against the floor: ``pairs`` runs of each at 16 connections and at 1, alternated
    (floor, stackd, floor, …) so both see the same neighbours; the median of the per-pair ratios
    (req/s, p99 and CPU per request at c=16) and differences (p50 at c=1)."""
    runs = []
    for _ in range(pairs):
        pair: dict[str, dict[str, float]] = {}
        for connections in (16, 1):
            for name, url in (("floor", floor), ("stackd", stackd)):
                wrk(url, BODY, connections, 1)
                pair[f"{name}@{connections}"] = wrk(url, BODY, connections, duration_s)
        runs.append(pair)
        f16, s16, f1, s1 = pair["floor@16"], pair["stackd@16"], pair["floor@1"], pair["stackd@1"]
        print(
            f"{'pair: floor / stackd':48} c=16  p99 {f16['p99_ms']:.3f} / {s16['p99_ms']:.3f} ms"
            f"  {f16['rps']:.0f} / {s16['rps']:.0f} req/s  CPU {f16['cpu_us']:.0f} / {s16['cpu_us']:.0f} us/req"
            f";  c=1 p50 {f1['p50_ms']:.3f} / {s1['p50_ms']:.3f} ms",
            flush=True,
        )
    return {
        "runs": runs,
        "p99_ratio": statistics.median(r["stackd@16"]["p99_ms"] / r["floor@16"]["p99_ms"] for r in runs),
        "rps_ratio": statistics.median(r["stackd@16"]["rps"] / r["floor@16"]["rps"] for r in runs),
        "cpu_ratio": statistics.median(r["floor@16"]["cpu_us"] / r["stackd@16"]["cpu_us"] for r in runs),
        "p50_c1_over_ms": statistics.median(r["stackd@1"]["p50_ms"] - r["floor@1"]["p50_ms"] for r in runs),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--pairs", type=int, default=3, help="alternating floor/stackd runs (c=16 and c=1) for the ratios"
    )
    args = parser.parse_args(argv)
    streaming = {**BODY, "stream": True}
    rows: list[tuple[str, str, dict[str, Any]]] = []
    with ExitStack() as stack:
        sim, backup = start_sim(stack), start_sim(stack)
        failing = start_sim(stack, "http500")
        hanging = start_sim(stack, "hang")
        refused = f"http://127.0.0.1:{free_port()}"
        gateway = start_server(stack, "stackd", primary=sim, backup=backup)
        via_refused = start_server(stack, "stackd", primary=refused, backup=backup, threshold=10**9)
        via_500 = start_server(stack, "stackd", primary=failing, backup=backup, threshold=10**9)
        via_hang = start_server(
            stack, "stackd", primary=hanging, backup=backup, threshold=3, first_token_s=1.0
        )
        reference = start_server(stack, "reference", primary=sim)
        floor = start_server(stack, "floor", primary=sim)
        plan = [
            ("direct to the simulator", f"{sim}/v1/chat/completions", BODY),
            ("direct to the simulator, stream", f"{sim}/v1/chat/completions", streaming),
            (FLOOR, f"{floor}/v1/chat/completions", BODY),
            (STACKD, f"{gateway}/v1/chat/completions", BODY),
            ("stackd /v1/chat/completions, stream", f"{gateway}/v1/chat/completions", streaming),
            ("stackd /tools/reason", f"{gateway}/tools/reason", TOOLS_BODY),
            ("stackd /tools/reason, stream", f"{gateway}/tools/reason", {**TOOLS_BODY, "stream": True}),
            ("reference: FastAPI + httpx pass-through", f"{reference}/v1/chat/completions", BODY),
            ("failover: strategy 1 refuses (every call)", f"{via_refused}/v1/chat/completions", BODY),
            ("failover: strategy 1 answers 500 (every call)", f"{via_500}/v1/chat/completions", BODY),
        ]
        for label, url, body in plan:
            for connections in (1, 16):
                wrk(url, body, connections, 1)  # warm the pools and the code paths
                result = wrk(url, body, connections, args.duration)
                rows.append((label, f"c={connections}", result))
                print(ROW.format(label=label, conns=f"c={connections}", **result), flush=True)
        against = against_the_floor(
            f"{floor}/v1/chat/completions", f"{gateway}/v1/chat/completions", args.pairs, args.duration
        )
        hang = asyncio.run(hang_costs(via_hang, 200))
        ollama_port = free_port()
        ollama_url = start(stack, ["-c", OLLAMA_SIM.format(port=ollama_port)], ollama_port)
        for label, result in asyncio.run(ollama_data_path(ollama_url, args.duration)).items():
            print(
                ROW.format(
                    label=f"/api/chat via {label}",
                    conns="c=16",
                    p99_ms=float("nan"),
                    cpu_us=float("nan"),
                    **result,
                )
            )
        print(
            f"{'failover: strategy 1 hangs (first_token_s 1)':48} {hang['slow_calls']} calls paid "
            f"{hang['slow_ms_each']:.0f} ms each, then p50 {hang['then_p50_ms']:.3f} ms (circuit open)"
        )
    print(
        f"stackd against the floor, {args.pairs} alternating pairs (medians; targets: req/s >= 0.7x, "
        f"p99 <= 3x, c=1 p50 <= floor + 0.15 ms): req/s {against['rps_ratio']:.2f}x, p99 "
        f"{against['p99_ratio']:.2f}x, c=1 p50 floor + {against['p50_c1_over_ms']:.3f} ms; CPU per request: "
        f"floor's / stackd's {against['cpu_ratio']:.2f}x; load average {os.getloadavg()[0]:.1f}"
    )
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "hang": hang, "against_floor": against}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2:])
    else:
        main(sys.argv[1:])
