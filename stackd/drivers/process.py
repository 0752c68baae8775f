"""Local engine processes behind the ``ProcessDriver`` contract (llama.cpp's server, vLLM …).

One ``_Member`` per config model owns its engine: ``ensure_running``, ``ensure_stopped`` and
the supervisor's restarts all decide under the member's lock, on the member's own state, never
on a stale read (llama-swap's ``EnsureReady``, issue #946). The lifecycle:

    stopped ─ensure_running─▶ starting ──health 2xx──▶ ready ──ensure_stopped──▶ stopping ─▶ stopped
                                 │ exits / timeout            │ dies on its own
                                 ▼                            ▼
                            (start fails)            exited ─restart policy─▶ starting (backoff)
                                                              └─ limit reached ─▶ failed

- A start picks a free loopback port (or the configured one), writes the engine's PID and start
  time to the process table *before* waiting for it, and is ready when the health path answers
  2xx. An engine that exits first fails the start at once, with its exit status and last lines.
- A stop sends SIGTERM to the process group, SIGKILL after ``stop_grace_s`` (llama.cpp's server
  ignores SIGTERM while it streams), and returns once no process of the group is left.
- At the first call after a daemon start, the engines that still run are adopted (``process_adoption``).
- Errors: a start that fails raises ``DriverFailed`` with the member's log tail; nothing else.

The decisions are here, on the member; the launch, readiness (and the answers to callers), log
and restart policy are in ``process_launch``, ``process_readiness``, ``process_logs``, ``process_restart``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from stackd.config.models import Api, Model, ProcessRuntime
from stackd.drivers import process_group as pg
from stackd.drivers.base import EngineStatus, ProcessInfo
from stackd.drivers.process_adoption import stop_strays, surviving_records
from stackd.drivers.process_engine import Engine, ProcessJournal, describe_exit, runtime_digest
from stackd.drivers.process_launch import LaunchContext, model_file, plan_launch, spawn_engine
from stackd.drivers.process_logs import (
    LOG_CAP_BYTES,
    LOG_TAIL_LINES,
    engine_log_tail,
    failure_message,
    member_log_path,
    write_start_marker,
)
from stackd.drivers.process_readiness import (
    member_status,
    process_info,
    wait_healthy,
    wait_serving,
    warm_up,
)
from stackd.drivers.process_restart import backoff_s, ran_stably, restart_runtime
from stackd.errors import DriverFailed
from stackd.roles import LiveEndpoints

if TYPE_CHECKING:  # aiohttp (~0.1 s) is imported by the first probe, not at the daemon's start
    import aiohttp

log = logging.getLogger("stackd.process")

MemberState = Literal["stopped", "starting", "ready", "stopping", "exited", "restarting", "failed"]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _Member:
    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    engine: Engine | None = None
    _state: MemberState = "stopped"
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) at each change
    generation: int = 0  # engines spawned or adopted so far: a new number is a new engine
    ready_at: float | None = None  # when the current engine first answered its health path
    wanted: bool = False
    restarts: int = 0
    exits: int = 0
    last_exit: str | None = None
    log_path: Path | None = None
    restart_task: asyncio.Task[None] | None = None
    watch_task: asyncio.Task[None] | None = None
    model: Model | None = None  # the config it last ran with (an adopted engine learns it later)

    @property
    def state(self) -> MemberState:
        return self._state

    @state.setter
    def state(self, state: MemberState) -> None:
        """Every change wakes the callers waiting for this engine (``wait_serving``)."""
        if state != self._state:
            self._state = state
            self.changed.set()
            self.changed = asyncio.Event()


class LocalProcessDriver:
    """``ProcessDriver`` over real OS processes, for the members whose runtime is ``process``.

    ``on_exit(model, why)`` is called when an engine dies on its own (metrics, events)."""

    def __init__(
        self,
        state_dir: Path,
        journal: ProcessJournal,
        endpoints: LiveEndpoints,
        *,
        gpu_device: int = 0,
        python: str = sys.executable,
        on_exit: Callable[[str, str], None] | None = None,
        sleep: Sleep = asyncio.sleep,
        log_cap_bytes: int = LOG_CAP_BYTES,
        withheld_env: frozenset[str] = frozenset(),
    ) -> None:
        """``withheld_env``: variables of stackd's environment an engine is not given (tokens,
        cloud keys); a member's own ``process.env`` may still set them."""
        self._state_dir = state_dir.resolve()
        self._journal = journal
        self._endpoints = endpoints
        self._on_exit = on_exit
        self._sleep = sleep
        self._log_cap = log_cap_bytes
        self._members: dict[str, _Member] = {}
        self._adopted = False
        self._adoption_lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self.owner = hashlib.sha256(str(self._state_dir).encode()).hexdigest()[:16]
        self._launch = LaunchContext(self._state_dir, python, self.owner, gpu_device, withheld_env)

    # ---------------------------------------------------------------- the contract

    async def running(self, models: Mapping[str, Model]) -> frozenset[str]:
        await self._adopt_once()
        for name, model in models.items():  # an adopted engine learns its config (restart policy)
            member = self._members.get(name)
            if member is not None and member.model is None:
                member.model = model
        return frozenset(n for n in models if (m := self._members.get(n)) and m.engine is not None)

    async def ensure_running(self, name: str, model: Model) -> None:
        runtime = _runtime(name, model)
        await self._adopt_once()
        member = self._member(name)
        member.model = model
        async with member.lock:
            member.wanted = True  # a restart waiting for its backoff finds the engine up, and ends
            if member.engine is not None and not member.engine.exited():
                await self._wait_ready(member, model, runtime, member.engine)
                return
            member.restarts = 0
            await self._start(member, model, runtime)

    async def ensure_stopped(self, name: str, model: Model) -> None:
        runtime = _runtime(name, model)
        await self._adopt_once()
        member = self._member(name)
        member.wanted = False
        _cancel(member.restart_task)  # before the lock: a restart may hold it while its engine loads
        async with member.lock:
            await self._stop(member, runtime.stop_grace_s)

    def endpoint(self, name: str) -> str | None:
        return self._endpoints.get(name)

    def processes(self) -> list[ProcessInfo]:
        return [process_info(m, self.log_tail(n)) for n, m in sorted(self._members.items())]

    # ---------------------------------------------------------------- readiness, for the router

    def engine_status(self, model: str) -> EngineStatus | None:
        member = self._members.get(model)
        return None if member is None else member_status(member)

    async def wait_serving(self, model: str, timeout_s: float) -> EngineStatus | None:
        member = self._members.get(model)
        return None if member is None else await wait_serving(member, timeout_s)

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        return engine_log_tail(self.log_file(name), lines)

    def log_file(self, name: str) -> Path:
        """The engine's log: its stdout and stderr, run after run, each run after a
        ``START_MARKER`` line (``STATE_DIR/logs/NAME.log``; ``stackd logs NAME`` reads it)."""
        member = self._members.get(name)
        return member.log_path if member and member.log_path else self._log_path(name)

    async def aclose(self, deadline_s: float = 30.0) -> None:
        """Stop every engine in parallel under one deadline (the daemon is shutting down)."""

        async def stop(member: _Member) -> None:
            member.wanted = False
            _cancel(member.restart_task)
            grace = member.model.process.stop_grace_s if member.model and member.model.process else 10.0
            async with member.lock:
                await self._stop(member, grace_s=min(grace, deadline_s / 2))

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline_s):
                await asyncio.gather(*(stop(m) for m in self._members.values()))
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ---------------------------------------------------------------- start, wait, stop

    async def _start(self, member: _Member, model: Model, runtime: ProcessRuntime) -> None:
        member.state = "starting"
        port = runtime.port or pg.free_port()
        if runtime.port and not pg.port_is_free(port):
            member.state = "failed"
            raise DriverFailed(
                f"process member '{member.name}': port {port} is already in use; stop what "
                "listens there or unset process.port to let stackd pick one",
                model=member.name,
            )
        path = None
        if runtime.model_package:
            path = await asyncio.to_thread(model_file, self._state_dir, member.name, runtime)
        launch = plan_launch(self._launch, member.name, model, runtime, port, path)
        log_path = member.log_path = self._log_path(member.name)
        await asyncio.to_thread(pg.cap_log, log_path, self._log_cap)
        await asyncio.to_thread(write_start_marker, log_path, port, launch.argv)
        try:
            engine = await spawn_engine(member.name, launch, port, runtime_digest(runtime), log_path)
        except DriverFailed:
            member.state = "failed"
            raise
        member.engine = engine
        member.generation += 1
        await asyncio.to_thread(self._journal.record, engine.record)
        member.watch_task = asyncio.create_task(
            self._watch(member, engine), name=f"stackd-watch-{member.name}"
        )
        try:
            await self._wait_ready(member, model, runtime, engine)
        except BaseException:
            await self._stop(member, runtime.stop_grace_s)
            member.state = "failed"
            raise

    async def _wait_ready(
        self, member: _Member, model: Model, runtime: ProcessRuntime, engine: Engine
    ) -> None:
        """Ready once the health path answers 2xx (and the warm-up chat, when asked for)."""

        def failure(what: str) -> str:
            return failure_message(
                member.name, what, self.log_tail(member.name, 8), self._log_path(member.name)
            )

        left_s = await wait_healthy(self._client(), member.name, model, engine, self._sleep, failure)
        if runtime.warmup and model.api is Api.openai:
            await warm_up(self._client(), member.name, model, engine, left_s, failure)
        if member.state != "ready":
            member.ready_at = time.time()
            log.info("process member %s (pid %d) is ready", member.name, engine.pid)
        self._endpoints.set(member.name, engine.record.endpoint)
        member.state = "ready"  # after the endpoint: a caller woken by the change finds it

    async def _stop(self, member: _Member, grace_s: float) -> None:
        engine = member.engine
        if engine is None:
            member.state = "stopped" if member.state != "failed" else "failed"
            return
        member.state = "stopping"
        engine.stopping = True
        self._endpoints.clear(member.name)
        how = await pg.stop_group(engine.pid, grace_s, self._sleep, engine.exited)
        if engine.proc is not None:
            await engine.proc.wait()
        await asyncio.to_thread(self._journal.forget, member.name, engine.pid)
        log.info("process member %s (pid %d) %s", member.name, engine.pid, how)
        member.engine = None
        member.state = "stopped"

    # ---------------------------------------------------------------- supervision

    async def _watch(self, member: _Member, engine: Engine) -> None:
        """Notice the engine's exit at once (a spawned one's or an adopted one's); unless stackd
        stopped it, record it and apply the restart policy of the config it last ran with."""
        code = await engine.wait_capping_log(self._log_cap)
        if engine.stopping or member.engine is not engine:
            return
        why = describe_exit(code) if engine.proc is not None else "exited (adopted: exit status unknown)"
        member.engine, member.exits, member.last_exit = None, member.exits + 1, why
        if ran_stably(engine.record.started_at, time.time()):
            member.restarts = 0
        runtime = restart_runtime(member.wanted, member.model)
        model = member.model
        # Said at once, before the clean-up below awaits: a call that comes now waits for the
        # restart (or is told the engine is down) instead of meeting an endpoint that is gone.
        member.state = "restarting" if runtime is not None else "exited"
        self._endpoints.clear(member.name)
        # A dead leader may leave children in its group: they would hold the port and memory.
        await pg.stop_group(engine.pid, 1.0, self._sleep, engine.exited)
        await asyncio.to_thread(self._journal.forget, member.name, engine.pid)
        tail = self.log_tail(member.name, 5)
        log.warning(
            "process member %s (pid %d) %s on its own; last lines: %s",
            member.name,
            engine.pid,
            why,
            " | ".join(tail) or "(none)",
        )
        if self._on_exit is not None:
            self._on_exit(member.name, why)
        if runtime is None or model is None or member.state != "restarting":
            return  # no policy to apply, or stopped during the clean-up
        member.restart_task = asyncio.create_task(
            self._restart(member, model, runtime), name=f"stackd-restart-{member.name}"
        )

    async def _restart(self, member: _Member, model: Model, runtime: ProcessRuntime) -> None:
        while member.restarts < runtime.restart_limit:
            await self._sleep(backoff_s(runtime, member.restarts))
            async with member.lock:
                if not member.wanted or member.engine is not None:
                    return
                member.restarts += 1
                try:
                    await self._start(member, model, runtime)
                except DriverFailed as exc:
                    log.warning("restart %d of %s failed: %s", member.restarts, member.name, exc.message)
                    if member.restarts < runtime.restart_limit:
                        member.state = "restarting"  # the next try comes after its backoff
                    continue
                log.info("process member %s restarted (restart %d)", member.name, member.restarts)
                return
        member.state = "failed"
        member.last_exit = f"{member.last_exit}; gave up after {runtime.restart_limit} restarts"

    # ---------------------------------------------------------------- adoption after a restart of stackd

    async def _adopt_once(self) -> None:
        # Every caller waits for the one adoption: a start must not run while the stray scan below
        # could still take its fresh engine (recorded after the scan read the table) for a stray.
        async with self._adoption_lock:
            if not self._adopted:
                await self._adopt()
                self._adopted = True

    async def _adopt(self) -> None:
        known = set()
        for rec in await surviving_records(self._journal):
            known.add(rec.pid)
            member = self._member(rec.model)
            engine = Engine(rec, None)
            member.engine, member.state, member.wanted = engine, "ready", True
            member.generation, member.ready_at = member.generation + 1, time.time()
            member.log_path = Path(rec.log_path)
            self._endpoints.set(rec.model, rec.endpoint)
            log.info(
                "adopted process member %s (pid %d, port %d) from an earlier run",
                rec.model,
                rec.pid,
                rec.port,
            )
            # No config at hand here: ``running`` gives it the member's, for the restart policy.
            member.watch_task = asyncio.create_task(self._watch(member, engine))
        await stop_strays(self.owner, known, self._sleep)

    # ---------------------------------------------------------------- helpers

    def _member(self, name: str) -> _Member:
        member = self._members.get(name)
        if member is None:
            member = self._members[name] = _Member(name)
        return member

    def _log_path(self, name: str) -> Path:
        return member_log_path(self._state_dir, name)

    def _client(self) -> aiohttp.ClientSession:
        # aiohttp, which the router and the health checks load anyway: httpx would add ~4 MiB
        # to the daemon (docs/benchmarks.md, "Idle memory"). No proxy: engines are on loopback.
        if self._http is None or self._http.closed:
            import aiohttp

            self._http = aiohttp.ClientSession(trust_env=False)
        return self._http


def _runtime(name: str, model: Model) -> ProcessRuntime:
    if model.process is None:
        raise DriverFailed(f"model '{name}' has no process section", model=name)
    return model.process


def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done() and task is not asyncio.current_task():
        task.cancel()
