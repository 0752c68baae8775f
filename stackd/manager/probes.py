"""``MemberHealth``: what the manager knows of its members between observations.

The last probe of each member, the swarm and remote members found degraded, the last result of
each periodic job, when each member last served a request (idle TTLs count from there) and when
a switch last started its engine (a probe sent before that says nothing of the engine now).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from stackd.config.models import Runtime, StacksConfig
from stackd.planner.members import is_clustered

log = logging.getLogger("stackd.manager")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    at: float  # wall clock
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What stackd holds of one member's health, decided once (``MemberHealth.verdict``) and read
    by status, the status page, ``/roles`` and the router alike.

    ``health``: ``ok`` (its last probe answered), ``unprobed``, ``degraded`` (a remote or Swarm
    member that does not answer: the rest of the stack serves), ``unhealthy`` (a local engine that
    runs but does not answer its probe). ``why``: the probe's words. ``skip``: the router must not
    try it now (a Swarm member whose node is down or whose task does not run: its endpoint is gone;
    any other member is tried, and its failure moves the chain on)."""

    health: Literal["ok", "unprobed", "degraded", "unhealthy"]
    why: str | None = None
    skip: bool = False


@dataclass(frozen=True)
class JobResult:
    ok: bool
    at: float  # wall clock
    summary: str


class MemberHealth:
    """``clock`` (monotonic) times idle TTLs; ``wall_clock`` stamps what is shown."""

    def __init__(self, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.probes: dict[str, ProbeResult] = {}
        self.degraded: dict[str, str] = {}
        self.jobs: dict[str, JobResult] = {}
        self.last_use: dict[str, float] = {}
        self.started_at: dict[str, float] = {}  # model -> wall time a switch last started its engine

    def touch(self, model: str) -> None:
        self.last_use[model] = self.clock()

    def record_probe(
        self, config: StacksConfig, model: str, ok: bool, error: str | None, started_at: float | None
    ) -> None:
        """A result older than what is known already (the member was restarted by a switch while
        the probe ran) says nothing about the engine that runs now, and is dropped."""
        known = self.probes.get(model)
        if started_at is not None and known is not None and known.at > started_at:
            return
        if started_at is not None and self.started_at.get(model, float("-inf")) > started_at:
            return
        self.probes[model] = ProbeResult(ok, self.wall_clock(), error)
        clustered = is_clustered(config.models[model])
        if config.models[model].runtime == Runtime.remote or clustered:
            if ok:
                if self.degraded.pop(model, None) is not None and clustered:
                    log.info("member %s serves again", model)
            else:
                if clustered and self.degraded.get(model) != error:
                    log.warning("member %s degraded: %s", model, error)
                self.degraded[model] = error or "unreachable"

    def restarted(self, models: Iterable[str]) -> None:
        """Engines a switch started are new engines: what a probe said of the ones before is forgotten."""
        now = self.wall_clock()
        for model in models:
            self.probes.pop(model, None)
            self.started_at[model] = now

    def verdict(self, config: StacksConfig, model: str) -> Verdict:
        """The one answer to "is ``model`` healthy?" (see ``Verdict``)."""
        spec = config.models.get(model)
        if spec is None:
            return Verdict("unprobed")
        if model in self.degraded:
            return Verdict("degraded", self.degraded[model], skip=is_clustered(spec))
        probe = self.probes.get(model)
        if probe is None:
            return Verdict("unprobed")
        if probe.ok:
            return Verdict("ok")
        return Verdict("degraded" if spec.runtime == Runtime.remote else "unhealthy", probe.error)

    def unavailable(self, config: StacksConfig, model: str) -> str | None:
        """Why the router must skip ``model`` now (its verdict's ``skip``), else None."""
        verdict = self.verdict(config, model)
        return verdict.why if verdict.skip else None

    def record_job(self, name: str, ok: bool, summary: str) -> None:
        self.jobs[name] = JobResult(ok, self.wall_clock(), summary)
