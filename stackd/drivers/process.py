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
- At the first call after a daemon start, every recorded engine that still runs (same PID, same
  start time) is adopted; records of dead ones are dropped, and an engine of this state dir that
  has no record (spawned in the instant before the record was written) is stopped.
- Errors: a start that fails raises ``DriverFailed`` with the member's log tail; nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import aiohttp

from stackd.config.models import (
    DEFAULT_PROCESS_HEALTH_PATH,
    DEFAULT_PROCESS_START_TIMEOUT_S,
    Api,
    Model,
    Placement,
    ProcessRuntime,
    RestartPolicy,
)
from stackd.drivers import process_group as pg
from stackd.drivers.base import EngineStatus, ProcessInfo
from stackd.drivers.container_env import in_container, missing_package_hint
from stackd.drivers.model_packages import ModelPackageMissing, ensure_model_file
from stackd.drivers.probe_lines import is_probe_line
from stackd.errors import DriverFailed
from stackd.roles import LiveEndpoints
from stackd.state.processes import ProcessRecord

log = logging.getLogger("stackd.process")

LOG_CAP_BYTES = 4 * 2**20
LOG_TAIL_LINES = 20
MAX_BACKOFF_S = 60.0
STABLE_AFTER_S = 60.0  # an engine up this long before it died starts a fresh restart count
START_MARKER = "---- stackd: start "
MemberState = Literal["stopped", "starting", "ready", "stopping", "exited", "restarting", "failed"]
Sleep = Callable[[float], Awaitable[None]]


class ProcessJournal(Protocol):
    """Where engine PIDs are recorded (``stackd.state.processes``). Calls block briefly (fsync)."""

    def record(self, rec: ProcessRecord) -> None: ...
    def forget(self, model: str, pid: int) -> None: ...
    def all(self) -> list[ProcessRecord]: ...


@dataclass
class _Engine:
    record: ProcessRecord
    proc: asyncio.subprocess.Process | None  # None for an engine adopted from an earlier run
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.record.pid

    def exited(self) -> bool:
        if self.proc is not None:
            return self.proc.returncode is not None
        return not pg.is_alive(self.record.pid, self.record.create_time)

    async def wait(self) -> int | None:
        """Wait for the leader's exit; its return code (None when adopted: not our child)."""
        if self.proc is not None:
            return await self.proc.wait()
        while True:  # not our child: no exit notification, so poll /proc
            if self.exited():
                return None
            await asyncio.sleep(0.5)


@dataclass
class _Member:
    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    engine: _Engine | None = None
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


def runtime_digest(runtime: ProcessRuntime) -> str:
    return hashlib.sha256(runtime.model_dump_json().encode()).hexdigest()[:16]


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


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
        self._gpu_device = gpu_device
        self._python = python
        self._on_exit = on_exit
        self._sleep = sleep
        self._log_cap = log_cap_bytes
        self._withheld_env = withheld_env
        self._members: dict[str, _Member] = {}
        self._adopted = False
        self._adoption_lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self.owner = hashlib.sha256(str(self._state_dir).encode()).hexdigest()[:16]

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
        out = []
        for name, m in sorted(self._members.items()):
            engine = m.engine
            pid = engine.pid if engine else None
            out.append(
                ProcessInfo(
                    model=name,
                    state=m.state,
                    pid=pid,
                    port=engine.record.port if engine else None,
                    endpoint=engine.record.endpoint if engine else None,
                    started_at=engine.record.started_at if engine else None,
                    restarts=m.restarts,
                    exits=m.exits,
                    last_exit=m.last_exit,
                    log_path=str(m.log_path) if m.log_path else None,
                    log_tail=tuple(self.log_tail(name))
                    if m.state in ("exited", "failed", "restarting")
                    else (),
                    pids=pg.tree_pids(pid) if pid else (),
                    rss_mib=pg.tree_rss_mib(pid) if pid else None,
                    ready_at=m.ready_at if m.state == "ready" else None,
                )
            )
        return out

    # ---------------------------------------------------------------- readiness, for the router

    def engine_status(self, model: str) -> EngineStatus | None:
        member = self._members.get(model)
        return None if member is None else _status(member)

    async def wait_serving(self, model: str, timeout_s: float) -> EngineStatus | None:
        member = self._members.get(model)
        if member is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            status = _status(member)
            dead = status.phase == "serving" and _died_unseen(member)
            left = deadline - loop.time()
            if status.phase == "down" or (status.phase == "serving" and not dead) or left <= 0:
                return status
            changed = member.changed
            # A dead engine's exit is handled within milliseconds; look again soon all the same.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.1) if dead else left):
                    await changed.wait()

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        # Without the health probes' requests: they would be most of a quiet engine's tail.
        return pg.log_tail(self.log_file(name), lines, START_MARKER, drop=is_probe_line)

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
        macros = {"PORT": str(port), "PYTHON": self._python, "STATE_DIR": str(self._state_dir)}
        if runtime.model_package:
            macros["MODEL_PATH"] = str(await asyncio.to_thread(self._model_file, member.name, runtime))
        argv = [_fill(arg, macros) for arg in runtime.command]
        endpoint = _fill(model.endpoint or "http://127.0.0.1:${PORT}/v1", macros)
        inherited = {k: v for k, v in os.environ.items() if k not in self._withheld_env}
        env = {
            **inherited,
            **{k: _fill(v, macros) for k, v in runtime.env.items()},
            pg.OWNER_ENV: self.owner,
            pg.MEMBER_ENV: member.name,
        }
        if model.placement == Placement.gpu:
            env.setdefault("CUDA_VISIBLE_DEVICES", str(self._gpu_device))
        log_path = member.log_path = self._log_path(member.name)
        await asyncio.to_thread(pg.cap_log, log_path, self._log_cap)
        await asyncio.to_thread(
            _append,
            log_path,
            f"{START_MARKER}{time.strftime('%Y-%m-%dT%H:%M:%S')} "
            f"port {port}: {argv[0]} … ({len(argv)} args)\n",
        )
        cwd = Path(_fill(runtime.cwd, macros)) if runtime.cwd else self._state_dir
        try:
            proc = await pg.spawn(argv, env, cwd, log_path)
        except OSError as exc:
            member.state = "failed"
            raise DriverFailed(
                f"process member '{member.name}' could not start {argv[0]!r}: "
                f"{exc.strerror or exc}; check process.command",
                model=member.name,
            ) from exc
        started = pg.create_time(proc.pid) or time.time()
        record = ProcessRecord(
            member.name,
            proc.pid,
            started,
            port,
            endpoint,
            tuple(argv),
            runtime_digest(runtime),
            str(log_path),
            time.time(),
        )
        engine = _Engine(record, proc)
        member.engine = engine
        member.generation += 1
        await asyncio.to_thread(self._journal.record, record)
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
        self, member: _Member, model: Model, runtime: ProcessRuntime, engine: _Engine
    ) -> None:
        """Poll the health path until 2xx; fail at once when the engine exits, or at the deadline."""
        health = model.health
        path = health.path if health else DEFAULT_PROCESS_HEALTH_PATH
        timeout_s = health.start_timeout_s if health else DEFAULT_PROCESS_START_TIMEOUT_S
        url = engine.record.endpoint.split("://", 1)[0] + "://127.0.0.1:" + f"{engine.record.port}{path}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last = "no answer yet"
        while True:
            if engine.exited():
                code = engine.proc.returncode if engine.proc else None
                raise DriverFailed(
                    self._failure(member.name, f"{describe_exit(code)} before it was ready"),
                    model=member.name,
                )
            try:
                wait = aiohttp.ClientTimeout(total=min(2.0, max(0.1, deadline - loop.time())))
                async with self._client().get(url, timeout=wait) as resp:
                    status = resp.status
                if 200 <= status < 300:
                    break
                last = f"HTTP {status} from {url}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__} from {url}"
            if loop.time() >= deadline:
                raise DriverFailed(
                    self._failure(
                        member.name,
                        f"was not ready within {timeout_s:g} s "
                        f"({last}); raise health.start_timeout_s if it loads slowly",
                    ),
                    model=member.name,
                )
            # Often at first: the wait is added to every switch (the target is <= 100 ms of
            # overhead); a refused connect costs microseconds, a slow engine is polled less.
            waited = loop.time() - (deadline - timeout_s)
            await self._sleep(0.01 if waited < 5 else 0.05 if waited < 30 else 0.25)
        if runtime.warmup and model.api is Api.openai:
            await self._warm(member, model, engine, deadline - loop.time())
        if member.state != "ready":
            member.ready_at = time.time()
            log.info("process member %s (pid %d) is ready", member.name, engine.pid)
        self._endpoints.set(member.name, engine.record.endpoint)
        member.state = "ready"  # after the endpoint: a caller woken by the change finds it

    async def _warm(self, member: _Member, model: Model, engine: _Engine, left_s: float) -> None:
        """One 1-token answer before the engine counts as ready: its first is slow (10.8 s, then
        0.05 s, for SmolLM2 on llama-cpp-python at load 8), and no caller should be that one."""
        url = f"{engine.record.endpoint.rstrip('/')}/chat/completions"
        body = {
            "model": model.request_model or member.name,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
        }
        try:
            wait = aiohttp.ClientTimeout(total=max(left_s, 0.1))
            async with self._client().post(url, json=body, timeout=wait) as resp:
                resp.raise_for_status()
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DriverFailed(
                self._failure(
                    member.name,
                    f"answered its health path but not a 1-token warm-up chat at {url} "
                    f"({type(exc).__name__}: {exc}); raise health.start_timeout_s, or set "
                    "process.warmup: false",
                ),
                model=member.name,
            ) from exc

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

    async def _watch(self, member: _Member, engine: _Engine) -> None:
        """Notice the engine's exit at once (a spawned one's or an adopted one's); unless stackd
        stopped it, record it and apply the restart policy of the config it last ran with."""
        while True:
            try:
                async with asyncio.timeout(5.0):
                    code = await engine.wait()
                break
            except TimeoutError:
                await asyncio.to_thread(pg.cap_log, Path(engine.record.log_path), self._log_cap)
        if engine.stopping or member.engine is not engine:
            return
        why = describe_exit(code) if engine.proc is not None else "exited (adopted: exit status unknown)"
        member.engine, member.exits, member.last_exit = None, member.exits + 1, why
        if time.time() - engine.record.started_at > STABLE_AFTER_S:
            member.restarts = 0
        model = member.model  # None: adopted and never observed since, so no policy known
        restart = (
            member.wanted
            and model is not None
            and model.process is not None
            and model.process.restart != RestartPolicy.never
        )
        # Said at once, before the clean-up below awaits: a call that comes now waits for the
        # restart (or is told the engine is down) instead of meeting an endpoint that is gone.
        member.state = "restarting" if restart else "exited"
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
        if not restart or model is None or model.process is None or member.state != "restarting":
            return  # no policy to apply, or stopped during the clean-up
        member.restart_task = asyncio.create_task(
            self._restart(member, model, model.process), name=f"stackd-restart-{member.name}"
        )

    async def _restart(self, member: _Member, model: Model, runtime: ProcessRuntime) -> None:
        while member.restarts < runtime.restart_limit:
            await self._sleep(min(MAX_BACKOFF_S, runtime.restart_backoff_s * 2**member.restarts))
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
        records = await asyncio.to_thread(self._journal.all)
        known = set()
        for rec in records:
            if not pg.is_alive(rec.pid, rec.create_time):
                await asyncio.to_thread(self._journal.forget, rec.model, rec.pid)
                continue
            known.add(rec.pid)
            member = self._member(rec.model)
            engine = _Engine(rec, None)
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
        for pid, name in await asyncio.to_thread(pg.owned_processes, self.owner):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if pid not in known and os.getpgid(pid) == pid:
                    log.warning(
                        "stopping engine process %d of %s: it has no record (stackd died as it started it)",
                        pid,
                        name,
                    )
                    await pg.stop_group(pid, 5.0, self._sleep)

    # ---------------------------------------------------------------- helpers

    def _member(self, name: str) -> _Member:
        member = self._members.get(name)
        if member is None:
            member = self._members[name] = _Member(name)
        return member

    def _log_path(self, name: str) -> Path:
        return self._state_dir / "logs" / f"{name}.log"

    def _failure(self, name: str, what: str) -> str:
        tail = self.log_tail(name, 8)
        lines = "; last log lines: " + " | ".join(tail) if tail else "; it wrote nothing to its log"
        return f"process member '{name}' {what}{lines} (full log: {self._log_path(name)})"

    def _client(self) -> aiohttp.ClientSession:
        # aiohttp, which the router and the health checks load anyway: httpx would add ~4 MiB
        # to the daemon (docs/benchmarks.md, "Idle memory"). No proxy: engines are on loopback.
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(trust_env=False)
        return self._http

    def _model_file(self, name: str, runtime: ProcessRuntime) -> Path:
        package = runtime.model_package
        assert package is not None
        try:
            return ensure_model_file(self._state_dir, package)
        except ModelPackageMissing as exc:
            raise DriverFailed(
                f"process member '{name}' needs the Python package {package}, which is not "
                f"installed; {missing_package_hint(package, in_container())}",
                model=name,
            ) from exc


def _status(member: _Member) -> EngineStatus:
    """What a caller is told of the member's engine (``EngineReadiness.engine_status``)."""
    name, state, why = f"engine {member.name}", member.state, member.last_exit
    runtime = member.model.process if member.model is not None else None
    limit = runtime.restart_limit if runtime is not None else 0
    task = member.restart_task
    # A restart goes through starting, and stopping and failed when a try fails: all of it is
    # one restart in progress until the policy gives up.
    restarting = state == "restarting" or (task is not None and not task.done() and member.wanted)
    match state:
        case "ready":
            return EngineStatus("serving", f"{name} is ready", member.generation)
        case _ if restarting:  # the counter moves as a try starts: before it, the next one is due
            n = member.restarts + (state in ("restarting", "failed"))
            reason = f"{name} {why}, restart {n}/{limit} in progress"
            return EngineStatus("waiting", reason, member.generation)
        case "starting":
            return EngineStatus("waiting", f"{name} is starting", member.generation)
        case "failed":
            return EngineStatus("down", f"{name} {why or 'failed to start'}", member.generation)
        case "exited":
            return EngineStatus("down", f"{name} {why} and was not restarted", member.generation)
        case _:
            return EngineStatus("down", f"{name} is {state}", member.generation)


def _died_unseen(member: _Member) -> bool:
    """The engine looks ready but has died: its exit is not handled yet (a moment after a kill)."""
    engine = member.engine
    return engine is None or engine.exited() or pg.has_exited(engine.pid)


def _runtime(name: str, model: Model) -> ProcessRuntime:
    if model.process is None:
        raise DriverFailed(f"model '{name}' has no process section", model=name)
    return model.process


def _fill(text: str, macros: Mapping[str, str]) -> str:
    for key, value in macros.items():
        text = text.replace("${" + key + "}", value)
    return text


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)


def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done() and task is not asyncio.current_task():
        task.cancel()
