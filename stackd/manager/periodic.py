"""Work on a timer: health probes, remote probes, drift detection, on-demand idle TTL.

Each job is a plain async method of ``PeriodicJobs`` that a test calls directly with a fake
clock; ``start`` hands the same methods to an apscheduler ``AsyncIOScheduler``. Every run is
recorded in the manager (``record_job``; probes through ``record_probe``), so ``/status`` shows
the last result of each job. A job never raises into the scheduler: a failure is its result.

Mutations go through the manager: idle releases run on its switch worker (never during a
switch), and drift repair, when enabled, is an ordinary switch to the active stack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from stackd.config.models import HealthCheck, Lifecycle, Model, Runtime
from stackd.errors import Conflict, ProbeTimedOut, StackdError
from stackd.manager import ModelStackManager
from stackd.manager.observe import drift
from stackd.planner.members import is_up

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger("stackd.manager.periodic")

Outcome = tuple[bool, str]  # (healthy, one-line summary) of one job run
PROBE_GRACE_S = 1.0  # on top of a probe's own timeout_s: the checker times out first
DEFAULT_PROBE_INTERVAL_S = HealthCheck.model_validate({}).interval_s


class PeriodicJobs:
    """The periodic jobs of one manager. ``clock`` defaults to the manager's (monotonic)."""

    def __init__(
        self,
        manager: ModelStackManager,
        *,
        clock: Callable[[], float] | None = None,
        remote_interval_s: float = 60.0,
        drift_interval_s: float = 30.0,
        idle_interval_s: float = 30.0,
        repair_drift: bool = False,
        leased: Callable[[str], bool] | None = None,
        on_healthy: Callable[[str], None] | None = None,
        extra_jobs: dict[str, tuple[float, Callable[[], Awaitable[Outcome]]]] | None = None,
    ) -> None:
        """``on_healthy(model)`` hears every passing probe (the router half-opens the model's
        open circuit at once rather than refusing a healthy engine until its cool-down ends)."""
        self.manager = manager
        self.on_healthy = on_healthy or (lambda model: None)
        self.leased = leased or (lambda model: False)  # a live lease keeps a model past its idle TTL
        self.clock = clock or manager.clock
        self.remote_interval_s = remote_interval_s
        self.drift_interval_s = drift_interval_s
        self.idle_interval_s = idle_interval_s
        self.repair_drift = repair_drift
        self.extra_jobs = extra_jobs or {}  # the day policy's tick, the power sampler
        self._last_probe: dict[str, float] = {}
        self._seen_up: dict[str, float] = {}
        self._scheduler: AsyncIOScheduler | None = None

    def _members(self) -> list[tuple[str, Model]]:
        active = self.manager.active_stack
        if active not in self.manager.config.stacks:
            return []
        assert active is not None
        return [(n, self.manager.config.models[n]) for n in self.manager.config.stacks[active].member_names]

    # ---------------------------------------------------------------- the jobs

    async def probe_health(self) -> Outcome:
        """Probe the running docker and process members whose ``health.interval_s`` has elapsed
        (process members are probed without a health section too, at its default interval)."""
        now = self.clock()
        observed = await self.manager.observe()
        running = observed.running_containers | observed.running_processes
        due = [
            (name, model)
            for name, model in self._members()
            if _probed_locally(model)
            and name in running
            and now - self._last_probe.get(name, float("-inf")) >= _interval(model)
        ]
        for name, _ in due:
            self._last_probe[name] = now
        results = await asyncio.gather(
            *(self._probe(name, model, self.manager.health.check) for name, model in due)
        )
        failed = [r for r in results if r]
        return not failed, f"probed {len(due)}" + (f"; unhealthy: {'; '.join(failed)}" if failed else "")

    async def probe_remotes(self) -> Outcome:
        """Probe every remote member (no tokens spent); a failure marks it degraded."""
        remotes = [(n, m) for n, m in self._members() if m.runtime == Runtime.remote]
        results = await asyncio.gather(
            *(self._probe(name, model, self.manager.remotes.probe) for name, model in remotes)
        )
        failed = [r for r in results if r]
        return not failed, f"probed {len(remotes)}" + (f"; degraded: {'; '.join(failed)}" if failed else "")

    async def _probe(self, name: str, model: Model, probe: Callable[[str, Model], Awaitable[None]]) -> str:
        """One probe; returns "" when healthy, else "name: why"."""
        limit = (model.health.timeout_s if model.health else 5.0) + PROBE_GRACE_S
        sent = self.manager.wall_clock()
        timed_out = False  # no answer within a bound (ours or the probe's own): typed, not read from words
        try:
            async with asyncio.timeout(limit):
                await probe(name, model)
        except TimeoutError:
            error, timed_out = f"no answer within {limit:g} s", True
        except ProbeTimedOut as exc:
            error, timed_out = exc.message, True
        except StackdError as exc:
            error = exc.message
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            self.manager.record_probe(name, True, started_at=sent)
            self.on_healthy(name)
            return ""
        if timed_out and self.manager.live_roles.in_flight.count(name):
            # A single-slot engine answers nothing else while it generates for stackd's own
            # request: a probe that times out then says "busy", not "unhealthy".
            return ""
        self.manager.record_probe(name, False, error, started_at=sent)
        return f"{name}: {error}"

    async def check_drift(self) -> Outcome:
        """Compare what runs with the active stack; optionally repair by re-applying it."""
        active = self.manager.active_stack
        if self.manager.current_switch is not None:
            return True, "skipped: a switch is running"
        if active not in self.manager.config.stacks:
            return True, "skipped: no active stack"
        assert active is not None
        found = drift(self.manager.config, active, await self.manager.observe_detailed())
        if not found:
            return True, "no drift"
        summary = "drift: " + "; ".join(found)
        if self.repair_drift:
            try:
                handle = await self.manager.submit_switch(active)
                summary += f"; repairing with switch {handle.id}"
            except StackdError as exc:
                summary += f"; repair not started: {exc.message}"
        return False, summary

    async def release_idle(self) -> Outcome:
        """Stop on-demand members idle past their ``idle_ttl_s`` (idle since the later of their
        last use, as ``manager.touch`` records it, and the first time this job saw them up).
        A model that a live lease holds (``leased``) is never stopped."""
        now = self.clock()
        observed = await self.manager.observe()
        released: list[str] = []
        for name, model in self._members():
            if model.lifecycle != Lifecycle.on_demand or model.idle_ttl_s is None:
                continue
            if not is_up(name, model, observed) or model.runtime == Runtime.remote:
                self._seen_up.pop(name, None)
                continue
            seen = self._seen_up.setdefault(name, now)
            since = max(seen, self.manager.last_used(name) or seen)
            if now - since < model.idle_ttl_s or self.leased(name):
                continue
            try:
                if not await self.manager.release(name, keep=self.leased):
                    continue  # leased while this job waited for the worker
            except Conflict:
                continue  # a switch runs; the next tick tries again
            self._seen_up.pop(name, None)
            released.append(f"{name} (idle {now - since:.0f} s)")
        return True, f"released {', '.join(released)}" if released else "nothing idle"

    # ---------------------------------------------------------------- scheduling

    async def run(self, name: str, job: Callable[[], Awaitable[Outcome]]) -> None:
        """Run one job and record its result in the manager; never raises."""
        try:
            ok, summary = await job()
        except Exception as exc:
            log.exception("periodic job %s failed", name)
            ok, summary = False, f"{type(exc).__name__}: {exc}"
        self.manager.record_job(name, ok, summary)

    def jobs(self) -> dict[str, tuple[float, Callable[[], Awaitable[Outcome]]]]:
        """name -> (interval in seconds, job)."""
        intervals = [_interval(m) for m in self.manager.config.models.values() if _probed_locally(m)]
        return {
            "health": (max(1.0, min(intervals, default=10.0)), self.probe_health),
            "remotes": (self.remote_interval_s, self.probe_remotes),
            "drift": (self.drift_interval_s, self.check_drift),
            "idle": (self.idle_interval_s, self.release_idle),
            **self.extra_jobs,
        }

    def start(self, scheduler: AsyncIOScheduler | None = None) -> AsyncIOScheduler:
        """Schedule every job on the running loop (call from async code, e.g. the lifespan)."""
        # Imported here: apscheduler's scheduler module scans every installed package's entry
        # points three times as it is imported (~0.1 s of CPU), which a daemon pays once it serves.
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = scheduler or AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        for name, (interval, job) in self.jobs().items():
            self._scheduler.add_job(
                self.run,
                "interval",
                args=(name, job),
                seconds=interval,
                id=name,
                max_instances=1,
                coalesce=True,
            )
        self._scheduler.start()
        return self._scheduler

    def shutdown(self, wait: bool = False) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=wait)


def _probed_locally(model: Model) -> bool:
    return (model.runtime == Runtime.docker and model.health is not None) or model.runtime == Runtime.process


def _interval(model: Model) -> float:
    return model.health.interval_s if model.health is not None else DEFAULT_PROBE_INTERVAL_S


def start_periodic(
    manager: ModelStackManager,
    *,
    leased: Callable[[str], bool] | None = None,
    on_healthy: Callable[[str], None] | None = None,
    extra_jobs: dict[str, tuple[float, Callable[[], Awaitable[Outcome]]]] | None = None,
) -> PeriodicJobs:
    """The daemon's jobs, started (the other knobs of ``PeriodicJobs`` keep their defaults)."""
    jobs = PeriodicJobs(manager, leased=leased, on_healthy=on_healthy, extra_jobs=extra_jobs)
    jobs.start()
    return jobs
