"""Zero-downtime role rebinding, seen from outside by a client of a real ``stackd serve``.

Done-when of issue 3: a probe that every 10 ms reads ``/roles/orchestrator`` and calls the health
endpoint it names sees zero failures during 20 consecutive switches, into and out of
``ollama-only`` too (there the orchestrator moves to the CPU and its health URL is Ollama's).
Elsewhere the orchestrator is an engine process (llama.cpp's server) that gets a free port at
each start: every switch out of ``ollama-only`` starts one, and the probe follows it there.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.daemon_process import get, start_demo_daemon, switch
from tests.integration.conftest import demo_image, docker_engine  # noqa: F401  (fixtures)
from tests.integration.demo_world import STACKS, WorldFactory, demo_worlds, sims  # noqa: F401  (fixtures)

pytestmark = pytest.mark.docker

A, B, C, D = STACKS  # D is ollama-only
TOUR = (A, B, C, D, A, C, B, D, C, A, D, B, A)  # every ordered pair once, from the default stack A
SWITCHES = [*TOUR[1:], *TOUR[1:9]]
PROBE_INTERVAL_S = 0.010
TEST_BOUND_S = 120.0


@dataclass
class RoleProbe:
    """Reads the orchestrator's binding, then calls its health URL, every 10 ms, in a thread."""

    url: str
    probes: int = 0
    failures: list[str] = field(default_factory=list)
    health_urls: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="role-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=2) as daemon:
            tick = time.monotonic()
            while not self._stop.is_set():
                self._probe_once(daemon)
                # A probe every 10 ms, or back to back when one took longer than that.
                tick = max(tick + PROBE_INTERVAL_S, time.monotonic())
                self._stop.wait(tick - time.monotonic())

    def _probe_once(self, daemon: httpx.Client) -> None:
        self.probes += 1
        at = time.time()
        target, binding = "(not read yet)", ""
        try:
            role = daemon.get("/roles/orchestrator")
            if role.status_code != 200:
                self.failures.append(f"{at:.3f} /roles/orchestrator answered {role.status_code}: {role.text}")
                return
            target = role.json()["health_url"]
            binding = f" (binding v{role.json()['version']} of {role.json()['stack']})"
            self.health_urls.add(target)
            # A new connection each time, as a client that just looked the backend up would open.
            health = httpx.get(target, timeout=2)
            if health.status_code != 200:
                self.failures.append(f"{at:.3f} {target}{binding} answered {health.status_code}")
        except httpx.HTTPError as exc:
            self.failures.append(f"{at:.3f} {target}{binding}: {type(exc).__name__}: {exc}")


def test_the_orchestrator_answers_throughout_twenty_switches(
    demo_worlds: WorldFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert len(SWITCHES) == 20
    moves = list(itertools.pairwise([A, *SWITCHES]))
    assert sum(t == D for _, t in moves) >= 3 and sum(p == D for p, _ in moves) >= 3
    started = time.monotonic()
    world = demo_worlds()
    daemon = start_demo_daemon(world, tmp_path, 1)
    probe = RoleProbe(daemon.url)
    try:
        assert get(daemon, "/model-stacks")["active"] == A
        probe.start()
        for previous, target in moves:
            result = switch(daemon, target)
            assert result["state"] == "succeeded", f"{previous} -> {target}: {result['error']}"
            assert time.monotonic() - started < TEST_BOUND_S, "the switches took too long"
    finally:
        probe.stop()
        daemon.proc.terminate()
        daemon.proc.wait(10)
    assert probe.failures == [], f"{len(probe.failures)} of {probe.probes} probes failed"
    assert probe.probes >= 20 * len(SWITCHES), f"the probe barely ran: {probe.probes} probes"
    ollama_root = world.sims.ollama.url + "/"
    assert ollama_root in probe.health_urls, probe.health_urls
    engine_urls = probe.health_urls - {ollama_root}
    starts = 1 + sum(p == D for p, _ in moves)  # the first start, then one per switch out of D
    assert 1 <= len(engine_urls) <= starts, probe.health_urls  # a port may come round again
    assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+/v1/models", u) for u in engine_urls), engine_urls
