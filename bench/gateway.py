"""Gateway benchmark: direct vs through stackd's /v1/chat/completions and /tools/reason, with wrk.

    python bench/gateway.py [--duration 5] [--out results.json]

Starts OpenAI simulators (zero added latency, one process each), stackd's tools and gateway
routers in a FastAPI app under uvicorn (one worker, subprocesses), and a reference FastAPI +
httpx pass-through; loads each with wrk (1 thread, a Lua script for the POST body) at 1 and
16 connections, and prints p50 / p99 / req/s. Failover rows: strategy 1 refuses connections
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
ROW = "{label:48} {conns:5} p50 {p50_ms:8.3f} ms  p99 {p99_ms:8.3f} ms  {rps:9.0f} req/s"
BODY = {
    "model": "reason",
    "messages": [{"role": "user", "content": "Why is the sky blue?"}],
    "max_tokens": 16,
}
TOOLS_BODY = {"problem": "Why is the sky blue?", "max_tokens": 16}


# ---------------------------------------------------------------- servers (subcommands)
def stackd_app(primary: str, backup: str, threshold: int, first_token_s: float) -> Any:
    from stackd.api.gateway import build_gateway_router
    from stackd.api.tools import build_tools_router
    from stackd.config.models import StacksConfig
    from stackd.roles import LiveRoles, RoleTable
    from stackd.router import ReasonRouter

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
    router = ReasonRouter(
        config, LiveRoles(RoleTable("bench", dict(stack.roles), frozenset(stack.member_names)))
    )

    def open_auth(request: Any) -> None:
        return None

    app = FastAPI()
    app.include_router(build_tools_router(router, open_auth))
    app.include_router(build_gateway_router(router, open_auth))
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
    parser.add_argument("kind", choices=["stackd", "reference"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--primary", default="")
    parser.add_argument("--backup", default="")
    parser.add_argument("--threshold", type=int, default=3)
    parser.add_argument("--first-token-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.kind == "stackd":
        app = stackd_app(args.primary, args.backup, args.threshold, args.first_token_s)
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


def start(stack: ExitStack, args: list[str], port: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [PYTHON, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    stack.callback(stop_process, proc)
    wait_listening(port)
    return f"http://127.0.0.1:{port}"


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
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
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
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error answers\n{out}")
    return {"p50_ms": latency("50"), "p99_ms": latency("99"), "rps": float(rps.group(1)) if rps else 0.0}


async def hang_costs(url: str, calls: int) -> dict[str, float]:
    """Sequential calls through a hanging primary: what the first calls paid, then the steady p50."""
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(calls):
            started = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=BODY) as reply:
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
    """The ``ollama`` package (httpx) vs stackd's aiohttp backend on /api/chat, 16 concurrent callers."""
    import ollama

    from stackd.config.models import Model
    from stackd.router.backends.ollama import OllamaBackend
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
    async with aiohttp.ClientSession() as session:
        backend = OllamaBackend("m", model, session, url)
        with_aiohttp = await measure(lambda: backend.complete(ChatRequest(messages)))
    return {"ollama package (httpx)": with_client, "stackd OllamaBackend (aiohttp)": with_aiohttp}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
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
        plan = [
            ("direct to the simulator", f"{sim}/v1/chat/completions", BODY),
            ("direct to the simulator, stream", f"{sim}/v1/chat/completions", streaming),
            ("stackd /v1/chat/completions (reason)", f"{gateway}/v1/chat/completions", BODY),
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
        hang = asyncio.run(hang_costs(via_hang, 200))
        ollama_port = free_port()
        ollama_url = start(stack, ["-c", OLLAMA_SIM.format(port=ollama_port)], ollama_port)
        for label, result in asyncio.run(ollama_data_path(ollama_url, args.duration)).items():
            print(ROW.format(label=f"/api/chat via {label}", conns="c=16", p99_ms=float("nan"), **result))
        print(
            f"{'failover: strategy 1 hangs (first_token_s 1)':48} {hang['slow_calls']} calls paid "
            f"{hang['slow_ms_each']:.0f} ms each, then p50 {hang['then_p50_ms']:.3f} ms (circuit open)"
        )
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "hang": hang}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2:])
    else:
        main(sys.argv[1:])
