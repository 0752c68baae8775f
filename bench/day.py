"""A day replayed: a 24 h trace of calls in virtual time against the REAL day policy
(``stackd.schedule.policy.decide`` and ``wake_target``, the code the daemon runs) and a simulated
card, compared with "always the default stack" and "switch by hand at 9 and 18".

    .venv/bin/python bench/day.py [--seed 27] [--json]

Nothing here sleeps: one loop steps a virtual clock by one second through Tuesday 31 March 2026
(Europe/Paris). Every ``tick_s`` the policy is asked what to do; a switch takes the simulated
time of its loads; a call whose role the running stack lacks waits for a wake (policy) or goes
unserved (the baselines: it would fall back to the cloud). Energy is integrated from 1 s power
samples through ``stackd.hardware.energy.EnergyMeter`` (the daemon's integrator).

Stated assumptions (inputs, not measurements):
* power of the card: 20 W with no model resident (no CUDA context, deepest P-state), 70 W idle
  with models resident (a context keeps it in P2), 450 W while a call generates on it;
* a switch takes 45 s to ``full`` (orchestrator 13 GiB + embeddings), 35 s to ``creative``
  (orchestrator + FLUX), 10 s to ``cpu-only`` (stops only); calls arriving meanwhile wait for it;
* one call at a time on the card (a queue); a call's GPU time is its duration in the trace;
* any served call counts as use of the running stack (its idle timer restarts when it ends).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stackd.config.models import StacksConfig
from stackd.hardware.energy import EnergyMeter
from stackd.hardware.types import GpuDevice
from stackd.schedule.policy import PolicyState, World, decide, wake_target

ZONE = ZoneInfo("Europe/Paris")
DAY = datetime(2026, 3, 31, tzinfo=ZONE).timestamp()  # a Tuesday
IDLE_W, RESIDENT_W, BUSY_W = 20.0, 70.0, 450.0
SWITCH_S = {"full": 45, "creative": 35, "cpu-only": 10}
GPU_STACKS = {"full", "creative"}


def bench_config() -> StacksConfig:
    """Three stacks: the seed's all-in default, an evening creative stack, a CPU-only floor."""
    gpu = {"runtime": "docker", "placement": "gpu", "api": "openai", "endpoint": "http://127.0.0.1:1/v1"}
    cpu = {**gpu, "placement": "cpu"}
    data = {
        "default_stack": "full",
        "roles": {r: {} for r in ("orchestrator", "embeddings", "vision", "diffusion")},
        "models": {
            "orch-8b": {**gpu, "memory_gb": 13, "docker": {"container": "orch"}},
            "embed": {**gpu, "memory_gb": 1, "docker": {"container": "embed"}},
            "vision": {**gpu, "memory_gb": 8, "docker": {"container": "vision"}},
            "flux": {**gpu, "memory_gb": 12, "docker": {"container": "flux"}},
            "orch-cpu": {**cpu, "memory_gb": 6, "docker": {"container": "orch-cpu"}},
        },
        "stacks": {
            "full": {
                "roles": {
                    "orchestrator": "orch-8b",
                    "embeddings": "embed",
                    "vision": "vision",
                    "diffusion": "flux",
                },
                "idle": {"after_s": 900, "to": "cpu-only"},
            },
            "creative": {
                "roles": {"orchestrator": "orch-8b", "diffusion": "flux"},
                "idle": {"after_s": 1800, "to": "cpu-only"},
            },
            "cpu-only": {"roles": {"orchestrator": "orch-cpu"}},
        },
        "schedules": {
            "timezone": "Europe/Paris",
            "windows": [
                {"days": ["mon", "tue", "wed", "thu", "fri"], "at": "09:00", "stack": "full"},
                {"at": "18:00", "stack": "creative"},
            ],
        },
    }
    return StacksConfig.model_validate(data)


@dataclass(frozen=True)
class Call:
    at: float
    role: str
    gpu_s: float


def trace(seed: int) -> list[Call]:
    """A working day's bursts, a lunch and a meeting with nothing, an evening of a few calls, a
    night of diffusion jobs, a 06:00 agent. Deterministic for a seed."""
    rng = random.Random(seed)

    def t(hh_mm: str) -> float:
        hours, minutes = map(int, hh_mm.split(":"))
        return datetime(2026, 3, 31, hours, minutes, tzinfo=ZONE).timestamp()

    calls: list[Call] = []
    for start, end in (("08:40", "12:30"), ("13:30", "15:00"), ("16:00", "18:00")):
        at = t(start)
        while at < t(end):  # a burst every 4-12 minutes of 3-8 calls
            for _ in range(rng.randint(3, 8)):
                at += rng.uniform(2, 20)
                role = rng.choices(["orchestrator", "embeddings", "vision"], [6, 3, 1])[0]
                calls.append(Call(at, role, {"orchestrator": 8.0, "embeddings": 0.5, "vision": 5.0}[role]))
            at += rng.uniform(240, 720)
    at = t("18:30")
    while at < t("22:00"):  # the evening: a question now and then
        calls.append(Call(at, "orchestrator", 8.0))
        at += rng.uniform(1800, 3000)
    at = t("22:00")
    for _ in range(3):  # the night: three batches of 20 images, 25 s each
        for _ in range(20):
            calls.append(Call(at, "diffusion", 25.0))
            at += 30
        at += 3600
    calls.append(Call(t("06:00") + 86_400 if t("06:00") < DAY else t("06:00"), "orchestrator", 8.0))
    return sorted((c for c in calls if DAY <= c.at < DAY + 86_400), key=lambda c: c.at)


@dataclass
class Run:
    name: str
    active: str
    switching_to: str | None = None
    switch_ends: float = 0.0
    active_since: float = DAY
    last_use: float | None = None
    busy_until: float = 0.0
    gpu_s: dict[str, float] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)  # calls a switch (a wake, a window) held
    queued: list[float] = field(default_factory=list)  # calls that waited only behind other calls
    unserved: int = 0
    switches: int = 0
    meter: EnergyMeter = field(default_factory=lambda: EnergyMeter(max_gap_s=10))

    def start_switch(self, target: str, now: float) -> None:
        if self.switching_to is None and target != self.active:
            self.switching_to, self.switch_ends = target, now + SWITCH_S[target]
            self.switches += 1


def serves(config: StacksConfig, stack: str, role: str) -> bool:
    return role in config.stacks[stack].roles


def replay(name: str, config: StacksConfig, calls: list[Call], policy: bool, by_hand: bool) -> Run:
    run = Run(name, "creative" if by_hand else "full")  # midnight: by hand, the evening stack still runs
    state = PolicyState()
    waiting: list[tuple[Call, float, bool]] = []  # (call, when it arrived, whether a switch held it)
    pending = list(calls)
    tick_s = config.schedules.tick_s if config.schedules else 15.0
    for second in range(86_400):
        now = DAY + second
        if run.switching_to is not None and now >= run.switch_ends:
            run.active, run.switching_to, run.active_since = run.switching_to, None, now
        if by_hand and second in (9 * 3600, 18 * 3600):
            run.start_switch("full" if second == 9 * 3600 else "creative", now)
        if policy and second % int(tick_s) == 0:
            world = World(now, run.active, run.active_since, run.last_use, switching=run.switching_to)
            decision = decide(config, state, world)
            state = decision.state
            if decision.action == "switch" and decision.intended is not None:
                run.start_switch(decision.intended, now)
        while pending and pending[0].at <= now:
            call = pending.pop(0)
            if serves(config, run.active, call.role) and run.switching_to is None:
                waiting.append((call, call.at, False))
                continue
            target = None
            if policy:
                decision = decide(config, state, World(now, run.active, run.active_since, run.last_use))
                target = wake_target(config, decision, run.active, call.role, None)
                if target is not None:
                    state = replace(state, downshift=None, gave_up=None)  # as DayDriver._switch_up
            if run.switching_to is not None and serves(config, run.switching_to, call.role):
                waiting.append((call, call.at, True))
            elif target is not None:
                run.start_switch(target, now)
                waiting.append((call, call.at, True))
            else:
                run.unserved += 1  # the running stack lacks the role: the cloud or nothing answers
        still: list[tuple[Call, float, bool]] = []
        for call, arrived, held in waiting:
            if run.switching_to is None and serves(config, run.active, call.role) and run.busy_until <= now:
                (run.waits if held else run.queued).append(now - arrived)
                run.busy_until = now + call.gpu_s
                run.last_use = now + call.gpu_s
            else:
                still.append((call, arrived, held))
        waiting = still
        resident = run.active in GPU_STACKS or run.switching_to in GPU_STACKS
        watts = BUSY_W if run.busy_until > now else RESIDENT_W if resident else IDLE_W
        if resident:
            run.gpu_s[run.active] = run.gpu_s.get(run.active, 0.0) + 1
        run.meter.sample(
            now, run.active, [GpuDevice(0, "simulated RTX 5090", 32607, 0, 32607, power_w=watts)]
        )
    return run


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = bench_config()
    calls = trace(args.seed)
    runs = [
        replay("always the default stack (full)", config, calls, policy=False, by_hand=False),
        replay("by hand: full at 9, creative at 18", config, calls, policy=False, by_hand=True),
        replay("day policy: schedule + idle + wake", config, calls, policy=True, by_hand=False),
    ]
    rows = []
    for run in runs:
        wh = {s: round(j / 3600, 1) for s, j in sorted(run.meter.joules_by_stack.items())}
        rows.append(
            {
                "strategy": run.name,
                "gpu_hours": {s: round(v / 3600, 2) for s, v in sorted(run.gpu_s.items())},
                "wh_by_stack": wh,
                "wh_total": round(sum(run.meter.joules_by_stack.values()) / 3600, 1),
                "switches": run.switches,
                "calls_waited_for_switch": len(run.waits),
                "wait_p50_s": percentile(run.waits, 50),
                "wait_p95_s": percentile(run.waits, 95),
                "queue_wait_p95_s": percentile(run.queued, 95),
                "unserved": run.unserved,
            }
        )
    if args.json:
        print(json.dumps({"calls": len(calls), "seed": args.seed, "rows": rows}, indent=2))
        return
    print(f"{len(calls)} calls, seed {args.seed}\n")
    print(
        "| strategy | GPU-hours resident (per stack) | Wh (per stack) | Wh total | switches "
        "| calls held by a switch | their wait p50 / p95 (s) | calls unserved |"
    )
    print("|---|---|---|---:|---:|---:|---|---:|")
    for r in rows:
        hours = ", ".join(f"{s} {v}" for s, v in r["gpu_hours"].items())
        wh = ", ".join(f"{s} {v}" for s, v in r["wh_by_stack"].items())
        p50, p95 = r["wait_p50_s"], r["wait_p95_s"]
        waits = "-" if p50 is None else f"{p50:.0f} / {p95:.0f}"
        print(
            f"| {r['strategy']} | {hours} | {wh} | {r['wh_total']} | {r['switches']} "
            f"| {r['calls_waited_for_switch']} | {waits} | {r['unserved']} |"
        )


if __name__ == "__main__":
    main()
