"""SIGKILL crash trials of a real ``stackd serve`` at random points of its switches.

    python -m tests.e2e.crash_world [--trials 200] [--seed 7]

The world is the fastest one that is still real: every member is an engine process the daemon
spawns itself (``tests/integration/engine_sim.py``: an HTTP server that answers its health path,
some after a delay), in its own process group, journalled by PID. Four stacks share and swap
members; one member takes 0.8 s to get ready (a wide window in which the target is incomplete)
and one never gets ready within its 1.5 s (its switch fails and is undone, unless a kill comes
first).

One trial: submit a switch from the active stack to a random other one, follow its events and
SIGKILL the daemon after a random one of them (or at once, before the first step: every sixth
trial), plus a random 0-50 ms; restart the daemon on the same state directory; then check that

- exactly one whole stack runs: the live engine processes of this world are exactly the process
  members of the active stack, one each, every one answering its health path;
- the API agrees: ``/model-stacks`` names that stack, ``/roles`` binds its roles, ``/status``
  shows no drift and tells what recovery did (``finished`` the switch, or ``rolled_back`` to the
  previous stack, naming the switch), and the switch's record says the same;
- the journal is closed (no ``intended`` row in ``stackd.db``).

The daemons run under a *keeper*, a small process that stands for the service manager (systemd
is the subreaper of a real daemon's engines): it is a child subreaper, so the engines that a
killed daemon leaves behind are re-parented to it, not to PID 1, until the next daemon adopts or
stops them; the "no engine left behind" fixture of tests/conftest.py sees their owner.

The trial's outcome is recorded with its kill point: a kill after the target was complete finishes
the switch, one before rolls it back. A kill that came too late (the switch had committed) is a
``restored`` restart and does not count as a trial; trials go on until ``--trials`` kills hit an
open switch. ``tests/e2e/test_crash_trials.py`` runs 32 trials in CI; docs/reliability.md has the
table of a long run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "tests" / "integration" / "engine_sim.py"
WORLD_ENV = "STACKD_CRASH_WORLD"  # set on every engine of a world: tells its processes apart
START_TIMEOUT_S = 30.0

MEMBERS = {  # name -> engine_sim arguments
    "alpha-a": [],
    "beta-b": [],
    "shared": [],
    "slow": ["--ready-after", "0.8"],
    "never": ["--ready-after", "3600"],
}
STACKS = {
    "alpha": ({"orchestrator": "alpha-a"}, ["alpha-a", "shared"]),
    "beta": ({"orchestrator": "beta-b"}, ["beta-b", "shared"]),
    "gamma": ({"orchestrator": "slow"}, ["slow", "alpha-a"]),
    "delta": ({"orchestrator": "beta-b"}, ["beta-b", "never"]),
}


def world_config(world_id: str) -> str:
    models = {
        name: {
            "runtime": "process",
            "placement": "cpu",
            "api": "openai",
            "memory_gb": 0.05,
            "health": {"path": "/health", "start_timeout_s": 1.5},
            "process": {
                "command": ["${PYTHON}", str(ENGINE), "--port", "${PORT}", *args],
                "env": {WORLD_ENV: world_id},
                "stop_grace_s": 2,
                "restart": "never",
            },
        }
        for name, args in MEMBERS.items()
    }
    stacks = {name: {"roles": roles, "members": members} for name, (roles, members) in STACKS.items()}
    config = {
        "default_stack": "alpha",
        "roles": {"orchestrator": {"required": True}},
        "models": models,
        "stacks": stacks,
    }
    return json.dumps(config, indent=1)  # JSON is YAML


# A child subreaper that starts daemons on request and reaps whatever ends up its child; its
# argv names it "stackd … serve" for tests/conftest.py's check of engine ownership.
KEEPER = r"""
import ctypes, json, os, subprocess, sys, threading, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

def reap():
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.05)

threading.Thread(target=reap, daemon=True).start()
children = []
for line in sys.stdin:
    spec = json.loads(line)
    with open(spec["log"], "ab") as log:
        child = subprocess.Popen(spec["argv"], cwd=spec["cwd"], env=spec["env"], stdout=log,
                                 stderr=subprocess.STDOUT)
    children.append(child)
    print(child.pid, flush=True)
"""


class Keeper:
    """The parent of the daemons (and, once their daemon died, of their engines)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", KEEPER, "stackd-crash-keeper", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def spawn(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> psutil.Process:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        return psutil.Process(int(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(proc: psutil.Process, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone(proc):
            return True
        time.sleep(0.01)
    return False


def process_members(stack: str) -> set[str]:
    return set(STACKS[stack][1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    url: str
    proc: psutil.Process
    token: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> Any:
        answer = httpx.get(f"{self.url}{path}", headers=self.headers(), timeout=10)
        answer.raise_for_status()
        return answer.json()


@dataclass
class Trial:
    n: int
    previous: str
    target: str
    kill_point: str
    outcome: str  # finished | rolled_back | restored (the kill came after the commit)
    active: str
    recovery_s: float
    problems: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.outcome != "restored"


class CrashWorld:
    """One state directory, one config, one daemon at a time (restarted after each kill)."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.world_id = f"crash-{os.getpid()}-{seed}-{time.monotonic_ns()}"
        self.config = workdir / "crash-world.yaml"
        self.config.write_text(world_config(self.world_id))
        self.state = workdir / "state"
        self.port = free_port()
        self.daemon: Daemon | None = None
        self.runs = 0
        self.keeper = Keeper()
        self._steps: dict[tuple[str, str], int] = {}

    # ---------------------------------------------------------------- the daemon
    def start(self) -> Daemon:
        self.runs += 1
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
        env.pop("STACKD_TOKEN", None)
        argv = [
            sys.executable,
            "-m",
            "stackd.cli",
            "serve",
            "--port",
            str(self.port),
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state),
            "--no-periodic",
        ]
        proc = self.keeper.spawn(argv, ROOT, env, self.workdir / f"daemon-{self.runs}.log")
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if gone(proc):
                raise AssertionError(f"stackd serve exited: {self.log_text()}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    self.daemon = Daemon(url, proc, (self.state / "token").read_text().strip())
                    return self.daemon
            time.sleep(0.02)
        proc.kill()
        raise AssertionError(f"stackd serve did not start: {self.log_text()}")

    def log_text(self) -> str:
        return (self.workdir / f"daemon-{self.runs}.log").read_text(errors="replace")

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(signal.SIGKILL)
        assert wait_gone(self.daemon.proc, 10)
        self.daemon = None

    def stop(self) -> None:
        """SIGTERM: the daemon stops its engines (adopted ones too) before it exits."""
        if self.daemon is not None:
            self.daemon.proc.terminate()
            if not wait_gone(self.daemon.proc, 30):
                self.daemon.proc.kill()
                wait_gone(self.daemon.proc, 5)
            self.daemon = None
        for proc in self.engines():  # whatever a failed trial left: never outlive the world
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.keeper.close()

    # ---------------------------------------------------------------- what runs
    def engines(self) -> list[psutil.Process]:
        """Live engine processes of this world (group leaders; zombies left out)."""
        out = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if proc.info["status"] == psutil.STATUS_ZOMBIE or str(ENGINE) not in (
                    proc.info["cmdline"] or []
                ):
                    continue
                if proc.environ().get(WORLD_ENV) == self.world_id:
                    out.append(proc)
        return out

    def wait_settled(self, daemon: Daemon, timeout_s: float = 30.0) -> dict[str, Any]:
        """``/status`` once recovery has reported and no switch runs."""
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                status = daemon.get("/status")
                if status.get("recovery_detail") and not status.get("switch_in_progress"):
                    return status
            time.sleep(0.05)
        raise AssertionError(f"recovery did not settle in {timeout_s} s: {status}")

    def open_journal_rows(self) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.state / "stackd.db", timeout=10)) as db:
            return db.execute(
                "SELECT switch_id, target_stack FROM journal WHERE state = 'intended'"
            ).fetchall()

    def check(
        self, daemon: Daemon, switch_id: str | None, previous: str, target: str
    ) -> tuple[str, str, list[str]]:
        """(recovery action, active stack, problems): every way the restarted daemon is not whole."""
        status = self.wait_settled(daemon)
        problems: list[str] = []
        active = daemon.get("/model-stacks")["active"]
        if active not in (previous, target):
            problems.append(f"active stack {active!r} is neither {previous!r} nor {target!r}")
        running = Counter(p.environ().get("STACKD_MEMBER") for p in self.engines())
        wanted = process_members(active) if active in STACKS else set()
        if set(running) != wanted or any(n != 1 for n in running.values()):
            problems.append(f"engines {dict(running)} for stack {active!r} (wants {sorted(wanted)})")
        for proc in self.engines():
            cmd = proc.cmdline()
            port = cmd[cmd.index("--port") + 1]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    continue
            if "--ready-after" not in cmd:
                problems.append(
                    f"engine {proc.environ().get('STACKD_MEMBER')} (pid {proc.pid}) is not healthy"
                )
            elif proc.environ().get("STACKD_MEMBER") in wanted and active in STACKS:
                problems.append(f"{proc.environ().get('STACKD_MEMBER')} is bound but not ready")
        roles = daemon.get("/roles")
        bindings = {row["role"]: row["model"] for row in roles["roles"]}
        if active in STACKS and (roles["stack"] != active or bindings != STACKS[active][0]):
            problems.append(f"/roles {roles['stack']} {bindings} for stack {active!r}")
        if status["drift"]:
            problems.append(f"drift {status['drift']}")
        detail = status["recovery_detail"]
        action = str(detail["action"])
        if switch_id is not None and action in ("finished", "rolled_back"):
            expected = target if action == "finished" else previous
            if detail["switch_id"] != switch_id or detail["stack"] != active or active != expected:
                problems.append(f"recovery {detail} after switch {switch_id} {previous}->{target}")
            if switch_id not in status["recovery"]:
                problems.append(f"status does not name the switch: {status['recovery']!r}")
            record = daemon.get(f"/model-stacks/switch/{switch_id}")
            if (record["kind"], record["state"], record["note"]) != (
                "recovery",
                "succeeded",
                status["recovery"],
            ):
                problems.append(f"switch record {record['kind']} {record['state']} {record['note']!r}")
        elif action != "restored":
            problems.append(f"recovery action {action!r}: {status['recovery']}")
        if rows := self.open_journal_rows():
            problems.append(f"journal still open: {rows}")
        return action, active, problems

    # ---------------------------------------------------------------- one trial
    def events(self, daemon: Daemon, switch_id: str) -> Iterator[dict[str, Any]]:
        url = f"{daemon.url}/model-stacks/switch/{switch_id}/events"
        with httpx.stream("GET", url, headers=daemon.headers(), timeout=30) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[len("data: ") :])

    def steps(self, daemon: Daemon, previous: str, target: str) -> int:
        """Steps of the plan from ``previous`` to ``target`` (a dry run, taken before the switch)."""
        if (previous, target) not in self._steps:
            answer = httpx.post(
                f"{daemon.url}/model-stacks/switch",
                json={"stack": target, "dry_run": True},
                headers=daemon.headers(),
                timeout=30,
            )
            answer.raise_for_status()
            self._steps[previous, target] = len(answer.json()["plan"]["steps"])
        return self._steps[previous, target]

    def trial(self, n: int) -> Trial:
        daemon = self.daemon or self.start()
        previous = daemon.get("/model-stacks")["active"]
        target = self.rng.choice([s for s in STACKS if s != previous])
        answer = httpx.post(
            f"{daemon.url}/model-stacks/switch",
            json={"stack": target, "wait": False},
            headers=daemon.headers(),
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        switch_id = answer.json()["switch_id"]
        # a kill after the k-th event of the switch (k = 0: at once), k drawn over its events: two
        # per step of its plan and the role swap (a failing switch has its undo steps on top)
        k = self.rng.randint(0, 2 * self.steps(daemon, previous, target))
        if n % 6 == 0:
            k = 0  # every sixth kill at once: the target is surely incomplete, recovery rolls back
        kill_point = "at once"
        if k:
            for i, event in enumerate(self.events(daemon, switch_id), 1):
                if event["type"] == "finished":
                    kill_point = f"after the end ({event.get('state')})"
                    break
                step = event.get("step") or {}
                kill_point = " ".join(
                    str(x) for x in (event["type"], step.get("kind"), step.get("model")) if x
                )
                if i == k:
                    break
        time.sleep(self.rng.uniform(0, 0.05))
        self.kill()
        started = time.monotonic()
        daemon = self.start()
        action, active, problems = self.check(daemon, switch_id, previous, target)
        return Trial(n, previous, target, kill_point, action, active, time.monotonic() - started, problems)

    def run(self, trials: int, max_attempts: int | None = None) -> list[Trial]:
        """Trials until ``trials`` kills hit an open switch (at most ``max_attempts`` kills)."""
        done: list[Trial] = []
        attempts = 0
        while sum(t.interrupted for t in done) < trials and attempts < (max_attempts or trials * 2):
            attempts += 1
            done.append(self.trial(attempts))
        return done


def table(trials: list[Trial]) -> str:
    interrupted = [t for t in trials if t.interrupted]
    consistent = [t for t in interrupted if not t.problems]
    outcomes = Counter(t.outcome for t in trials)
    lines = [
        f"{len(consistent)}/{len(interrupted)} interrupted switches recovered to one whole stack "
        f"({outcomes['finished']} finished, {outcomes['rolled_back']} rolled back); "
        f"{outcomes['restored']} kills came after the commit (restored); recovery "
        f"{min((t.recovery_s for t in trials), default=0):.2f}-{max((t.recovery_s for t in trials), default=0):.2f} s "
        "from restart to settled",
        f"{'kill point':46} {'trials':>6} {'finished':>9} {'rolled back':>12} {'restored':>9} {'problems':>9}",
    ]
    by_point: dict[str, Counter[str]] = {}
    for t in trials:
        # the event and the step's kind, not its model
        point = (
            t.kill_point if t.kill_point.startswith("after the end") else " ".join(t.kill_point.split()[:2])
        )
        counts = by_point.setdefault(point, Counter())
        counts[t.outcome] += 1
        counts["problems"] += bool(t.problems)
    for point, counts in sorted(
        by_point.items(), key=lambda kv: -sum(kv[1][o] for o in ("finished", "rolled_back", "restored"))
    ):
        total = counts["finished"] + counts["rolled_back"] + counts["restored"]
        lines.append(
            f"{point[:46]:46} {total:6} {counts['finished']:9} {counts['rolled_back']:12} "
            f"{counts['restored']:9} {counts['problems']:9}"
        )
    for t in trials:
        for problem in t.problems:
            lines.append(f"  trial {t.n} ({t.previous}->{t.target}, killed {t.kill_point}): {problem}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="kills that hit an open switch")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stackd-crash-") as tmp:
        world = CrashWorld(Path(tmp), args.seed)
        try:
            trials = world.run(args.trials)
        finally:
            world.stop()
    print(table(trials))
    sys.exit(0 if all(not t.problems for t in trials) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
