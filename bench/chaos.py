"""Chaos run: random faults on five simulated backends and random stack switches, while plain and
streamed calls go through a real ``stackd serve`` (the gateway and ``/tools/reason``).

    python bench/chaos.py [--duration 120] [--concurrency 8] [--seed 1] [--json out.json]

Five simulators (three OpenAI, Anthropic, Gemini: each protocol's own error bodies and streams) back
a daemon whose three stacks bind different members and orchestrators; ``reason`` tries the
deep-reasoning role, then the cloud APIs, then the local scheduler. While ``--concurrency``
clients call, a fault task gives a random simulator a random fault for a random while (refuse,
HTTP 500, hang, slow first token, die mid-stream after a random number of chunks, malformed
body) and a switch task switches to a random other stack every few seconds.

Every call ends in exactly one outcome:

- ``answered``: the whole answer (plain: the text; stream: every delta, a finish, ``[DONE]``),
  and its text is the simulator's answer, byte for byte;
- ``503``: an honest refusal: HTTP 503 in stackd's or OpenAI's error shape, listing the attempts;
- ``broken``: a stream whose backend failed after its first token, ended by an error event
  naming it, then ``[DONE]`` (honest too: the caller knows);
- ``truncated``: a stream that ended without a finish and without an error event. Must be 0;
- ``lost``: anything else (a 500, a wrong text, a hang past the client's timeout, a reset).
  Must be 0.

The daemon's RSS and open file descriptors are read at the start (after a warm-up) and at the
end (after the load stopped and the daemon settled); at the end every fault is cleared and one
call of each kind must be answered. ``tests/integration/test_chaos_short.py`` runs a short
version in CI; docs/reliability.md has a long run's table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from stackd.sim import AnthropicSim, Fault, GeminiSim, OpenAISim
from stackd.sim.server import SimServer
from stackd.sim.thread import SimThread

ROOT = Path(__file__).resolve().parents[1]
ANSWER = "Hello from the stackd simulator."
OUTCOMES = ("answered", "503", "broken", "truncated", "lost")
KINDS = ("gateway plain", "gateway stream", "tools plain", "tools stream")
FAULTS = [
    Fault.refuse,
    Fault.http500,
    Fault.hang,
    Fault.slow_first_token,
    Fault.die_mid_stream,
    Fault.malformed_body,
]
FIRST_TOKEN_S, TOTAL_S = 1.5, 8.0
CLIENT_TIMEOUT_S = TOTAL_S + 12.0  # past this a call is lost: the daemon must have ended it
KEYS = {"CHAOS_R1_KEY": "sk-chaos-r1", "CHAOS_CLAUDE_KEY": "chaos-claude", "CHAOS_GEMINI_KEY": "chaos-gemini"}
SIMS: dict[str, tuple[type[SimServer], str | None]] = {
    "r1": (OpenAISim, "CHAOS_R1_KEY"),
    "claude": (AnthropicSim, "CHAOS_CLAUDE_KEY"),
    "gemini": (GeminiSim, "CHAOS_GEMINI_KEY"),
    "orch": (OpenAISim, None),
    "orch2": (OpenAISim, None),
}
STACKS = ["full", "cloud", "lean"]

CONFIG = """
default_stack: full
roles:
  orchestrator: {{required: true}}
  deep_reasoning: {{}}
models:
  r1: {{runtime: remote, placement: cloud, api: openai, endpoint: "{r1}/v1",
        remote: {{api_key_env: CHAOS_R1_KEY, required: false}}}}
  claude: {{runtime: remote, placement: cloud, api: anthropic, endpoint: "{claude}",
            remote: {{api_key_env: CHAOS_CLAUDE_KEY, required: false}}}}
  gemini: {{runtime: remote, placement: cloud, api: gemini, endpoint: "{gemini}/v1beta",
            remote: {{api_key_env: CHAOS_GEMINI_KEY, required: false}}}}
  orch: {{runtime: remote, placement: cloud, api: openai, endpoint: "{orch}/v1", remote: {{required: false}}}}
  orch2: {{runtime: remote, placement: cloud, api: openai, endpoint: "{orch2}/v1", remote: {{required: false}}}}
stacks:
  full: {{roles: {{orchestrator: orch, deep_reasoning: r1}}, members: [claude, gemini]}}
  cloud: {{roles: {{orchestrator: orch2, deep_reasoning: r1}}, members: [gemini]}}
  lean: {{roles: {{orchestrator: orch2}}, members: [claude]}}
reason:
  strategies:
    cloud_gpu: {{role: deep_reasoning}}
    cloud_api: {{models: [claude, gemini]}}
    local_scheduler: {{role: orchestrator, queued: true}}
  default_chain: [cloud_gpu, cloud_api, local_scheduler]
  timeouts: {{connect_s: 1, first_token_s: {first_token_s}, total_s: {total_s}}}
  circuit: {{failure_threshold: 3, cooldown_s: 2}}
  local_queue: {{size: 64, concurrency: 16}}
"""


@dataclass
class Tally:
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    lost_why: Counter[str] = field(default_factory=Counter)
    truncated_why: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    switches: Counter[str] = field(default_factory=Counter)

    def count(self, kind: str, outcome: str, elapsed_ms: float, why: str = "") -> None:
        self.outcomes[kind][outcome] += 1
        self.latencies_ms[kind].append(elapsed_ms)
        if outcome == "lost":
            self.lost_why[f"{kind}: {why}"] += 1
        elif outcome == "truncated":
            self.truncated_why[f"{kind}: {why}"] += 1

    def total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.outcomes.values())


@dataclass
class Result:
    duration_s: float
    concurrency: int
    seed: int
    tally: Tally
    rss_mib: tuple[float, float]
    fds: tuple[int, int]
    tcp: tuple[int, int]  # TCP sockets among the fds: keep-alive pools to the backends, clients
    final_calls: dict[str, str]  # kind -> outcome once every fault was cleared
    final_stack: str | None
    tracebacks: int = 0  # "Traceback" lines in the daemon's log

    @property
    def calls(self) -> int:
        return sum(self.tally.total(o) for o in OUTCOMES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "concurrency": self.concurrency,
            "seed": self.seed,
            "calls": self.calls,
            "outcomes": {k: dict(c) for k, c in self.tally.outcomes.items()},
            "totals": {o: self.tally.total(o) for o in OUTCOMES},
            "lost_why": dict(self.tally.lost_why),
            "truncated_why": dict(self.tally.truncated_why),
            "faults": dict(self.tally.faults),
            "switches": dict(self.tally.switches),
            "rss_mib": list(self.rss_mib),
            "fds": list(self.fds),
            "tcp": list(self.tcp),
            "final_calls": self.final_calls,
            "final_stack": self.final_stack,
            "tracebacks": self.tracebacks,
        }

    def table(self) -> str:
        t = self.tally
        lines = [
            f"chaos: {self.duration_s:g} s, {self.concurrency} clients, seed {self.seed}; "
            f"{sum(t.faults.values())} faults ({', '.join(f'{k} {v}' for k, v in sorted(t.faults.items()))}); "
            f"{sum(t.switches.values())} switches ({', '.join(f'{k} {v}' for k, v in sorted(t.switches.items()))})",
            f"{'call':16} {'calls':>6} "
            + " ".join(f"{o:>9}" for o in OUTCOMES)
            + f" {'p50 ms':>8} {'p99 ms':>8}",
        ]
        for kind in (*KINDS, "total"):
            counts = Counter[str]()
            latencies: list[float] = []
            for k in KINDS if kind == "total" else (kind,):
                counts.update(t.outcomes[k])
                latencies += t.latencies_ms[k]
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            lines.append(
                f"{kind:16} {sum(counts.values()):6} "
                + " ".join(f"{counts[o]:9}" for o in OUTCOMES)
                + f" {p50:8.1f} {p99:8.1f}"
            )
        lines.append(
            f"daemon RSS {self.rss_mib[0]:.1f} -> {self.rss_mib[1]:.1f} MiB, open fds {self.fds[0]} -> "
            f"{self.fds[1]} (TCP {self.tcp[0]} -> {self.tcp[1]}); after the faults cleared: "
            + ", ".join(f"{k} {v}" for k, v in self.final_calls.items())
            + f"; active stack {self.final_stack}; {self.tracebacks} tracebacks in its log"
        )
        for why, n in (t.lost_why + t.truncated_why).most_common(10):
            lines.append(f"  {n} x {why}")
        return "\n".join(lines)


def percentile(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# ---------------------------------------------------------------- one call, classified
def sse_events(lines: list[str]) -> Iterator[Any]:
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            yield "[DONE]" if data == "[DONE]" else json.loads(data)


def classify_stream(kind: str, lines: list[str]) -> tuple[str, str]:
    """(outcome, why) of a 200 stream's lines: answered, broken (error event) or truncated."""
    text, finished, error, done = [], False, None, False
    for event in sse_events(lines):
        if event == "[DONE]":
            done = True
        elif "error" in event:
            error = event["error"]
        elif kind == "gateway stream":
            for choice in event.get("choices") or ():
                text.append((choice.get("delta") or {}).get("content") or "")
                finished = finished or choice.get("finish_reason") is not None
        elif "delta" in event:
            text.append(event["delta"])
        elif event.get("done"):
            finished = True
    if error is not None:
        if not done:
            return "lost", "an error event without [DONE]"
        return (
            ("broken", "") if "backend" in error or "attempts" in error else ("lost", f"error event {error}")
        )
    if finished and done:
        joined = "".join(text)
        return ("answered", "") if joined == ANSWER else ("lost", f"wrong text {joined[:60]!r}")
    return "truncated", f"finish {finished}, [DONE] {done}, {len(text)} deltas"


def honest_503(body: str) -> bool:
    """A 503 in OpenAI's shape (the gateway) or stackd's (the tools) that gives every reason."""
    try:
        data = json.loads(body)
        message = data["error"]["message"] if isinstance(data["error"], dict) else data["message"]
    except (ValueError, KeyError, TypeError):
        return False
    return "every strategy failed or was skipped" in str(message)


async def one_call(client: httpx.AsyncClient, kind: str, rng: random.Random) -> tuple[str, str]:
    streaming = kind.endswith("stream")
    if kind.startswith("gateway"):
        path = "/v1/chat/completions"
        body: dict[str, Any] = {"model": "reason", "messages": [{"role": "user", "content": "why?"}]}
    else:
        path = "/tools/reason"
        body = {"problem": "why?", "effort": rng.randint(1, 10)}
    if streaming:
        body["stream"] = True
    try:
        async with client.stream("POST", path, json=body) as resp:
            if resp.status_code == 503:
                return (
                    ("503", "")
                    if honest_503((await resp.aread()).decode())
                    else ("lost", "a 503 without reasons")
                )
            if resp.status_code != 200:
                return "lost", f"HTTP {resp.status_code}"
            if not streaming:
                data = json.loads(await resp.aread())
                text = (
                    data["choices"][0]["message"]["content"] if kind.startswith("gateway") else data["answer"]
                )
                return ("answered", "") if text == ANSWER else ("lost", f"wrong text {text[:60]!r}")
            lines: list[str] = []
            try:
                async for line in resp.aiter_lines():
                    lines.append(line)
            except httpx.HTTPError as exc:  # the connection ended mid-stream
                outcome, why = classify_stream(kind, lines)
                return (outcome, why) if outcome != "answered" else ("truncated", type(exc).__name__)
            return classify_stream(kind, lines)
    except httpx.TimeoutException:
        return "lost", f"no answer within {CLIENT_TIMEOUT_S:g} s"
    except httpx.HTTPError as exc:
        return "lost", type(exc).__name__


# ---------------------------------------------------------------- the world
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)


def start_daemon(config: Path, state: Path) -> Daemon:
    port = free_port()
    log = state.parent / "daemon.log"
    env = {**os.environ, **KEYS, "PYTHONPATH": str(ROOT)}
    env.pop("STACKD_TOKEN", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stackd.cli",
                "serve",
                "--port",
                str(port),
                "--config",
                str(config),
                "--state-dir",
                str(state),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stackd serve exited: {log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Daemon(url, (state / "token").read_text().strip(), proc, log)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"stackd serve did not start: {log.read_text()}")


def stop_daemon(daemon: Daemon) -> None:
    daemon.proc.terminate()
    try:
        daemon.proc.wait(15)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.proc.wait(5)


def footprint(daemon: Daemon) -> tuple[float, int, int]:
    """(RSS MiB, open fds, of which TCP sockets): sockets are the pools' and the clients'."""
    process = daemon.process
    return process.memory_info().rss / 2**20, process.num_fds(), len(process.net_connections("tcp"))


# ---------------------------------------------------------------- the chaos
async def fault_task(
    sims: dict[str, SimThread], rng: random.Random, tally: Tally, stop: asyncio.Event
) -> None:
    """Every 0.2-0.6 s, one random simulator gets one random fault for 0.3-3 s."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.TimerHandle] = set()

    def clear(name: str) -> None:
        loop.run_in_executor(None, sims[name].set_fault, Fault.none)

    while not stop.is_set():
        name = rng.choice(list(sims))
        sim = sims[name]
        fault = rng.choice(FAULTS)
        sim.control.first_token_delay_ms = rng.uniform(200, 2500)
        sim.control.cut_after_chunks = rng.randint(1, 8)
        await asyncio.to_thread(sim.set_fault, fault)
        tally.faults[fault.value] += 1
        pending.add(loop.call_later(rng.uniform(0.3, 3.0), clear, name))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.2, 0.6))
    for handle in pending:
        handle.cancel()
    await asyncio.gather(*(asyncio.to_thread(s.set_fault, Fault.none) for s in sims.values()))


async def switch_task(
    client: httpx.AsyncClient, rng: random.Random, tally: Tally, stop: asyncio.Event
) -> None:
    """Every 1-4 s, a switch to a random other stack, waited for."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(1.0, 4.0))
        if stop.is_set():
            break
        active = (await client.get("/model-stacks")).json()["active"]
        target = rng.choice([s for s in STACKS if s != active])
        try:
            resp = await client.post("/model-stacks/switch", json={"stack": target}, timeout=60)
        except httpx.HTTPError as exc:
            tally.switches[f"error {type(exc).__name__}"] += 1
            continue
        state = resp.json().get("state") if resp.status_code == 200 else f"HTTP {resp.status_code}"
        tally.switches[str(state)] += 1


async def client_task(
    client: httpx.AsyncClient, rng: random.Random, tally: Tally, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        kind = rng.choice(KINDS)
        started = time.perf_counter()
        outcome, why = await one_call(client, kind, rng)
        tally.count(kind, outcome, (time.perf_counter() - started) * 1000, why)


async def chaos(
    daemon: Daemon, sims: dict[str, SimThread], duration_s: float, concurrency: int, seed: int
) -> Result:
    rng = random.Random(seed)
    tally = Tally()
    headers = {"Authorization": f"Bearer {daemon.token}"}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(
        base_url=daemon.url, headers=headers, timeout=CLIENT_TIMEOUT_S, limits=limits
    ) as client:
        for kind in KINDS:  # warm-up: the pools and caches a long run reaches anyway
            await one_call(client, kind, rng)
        await asyncio.sleep(0.5)
        rss_start, fds_start, tcp_start = footprint(daemon)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(fault_task(sims, random.Random(rng.random()), tally, stop)),
            asyncio.create_task(switch_task(client, random.Random(rng.random()), tally, stop)),
            *(
                asyncio.create_task(client_task(client, random.Random(rng.random()), tally, stop))
                for _ in range(concurrency)
            ),
        ]
        await asyncio.sleep(duration_s)
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(2.5)  # past the circuits' cool-down: the next calls are their trials
        final = {kind: (await one_call(client, kind, rng))[0] for kind in KINDS}
        final_stack = (await client.get("/model-stacks")).json()["active"]
    await asyncio.sleep(1.0)  # the daemon closes what the client left (keep-alive, streams)
    rss_end, fds_end, tcp_end = footprint(daemon)
    return Result(
        duration_s,
        concurrency,
        seed,
        tally,
        (rss_start, rss_end),
        (fds_start, fds_end),
        (tcp_start, tcp_end),
        final,
        final_stack,
    )


def run_chaos(duration_s: float, concurrency: int, seed: int, workdir: Path | None = None) -> Result:
    """Start the simulators and a daemon, run the chaos, stop everything; returns the result."""
    with contextlib.ExitStack() as stack:
        tmp = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stackd-chaos-")))
        sims: dict[str, SimThread] = {}
        for name, (cls, env) in SIMS.items():
            sims[name] = stack.enter_context(cls.start_in_thread(record=False))
            if env is not None:
                sims[name].control.require_api_key = KEYS[env]
        config = tmp / "chaos.yaml"
        config.write_text(
            CONFIG.format(**{n: s.url for n, s in sims.items()}, first_token_s=FIRST_TOKEN_S, total_s=TOTAL_S)
        )
        daemon = start_daemon(config, tmp / "state")
        stack.callback(stop_daemon, daemon)
        result = asyncio.run(chaos(daemon, sims, duration_s, concurrency, seed))
        result.tracebacks = daemon.log.read_text(errors="replace").count("Traceback")
        return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of chaos")
    parser.add_argument("--concurrency", type=int, default=8, help="clients calling at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    result = run_chaos(args.duration, args.concurrency, args.seed)
    print(result.table())
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=2))
    bad = result.tally.total("truncated") + result.tally.total("lost") + result.tracebacks
    sys.exit(1 if bad or any(v != "answered" for v in result.final_calls.values()) else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
