"""When a process member's engine counts as ready, and what a caller is told of it.

- ``wait_healthy``: poll the health path until 2xx; fail at once when the engine exits, or at the
  deadline. ``warm_up``: one 1-token chat before the engine counts as ready.
- ``member_status``, ``wait_serving``: the ``EngineReadiness`` answers (serving, waiting, down)
  read off a member's state, which the member (``stackd.drivers.process``) owns and changes;
  ``process_info``: what status and metrics show of it. Nothing here changes a member.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from stackd.config.models import DEFAULT_PROCESS_HEALTH_PATH, DEFAULT_PROCESS_START_TIMEOUT_S, Model
from stackd.drivers import process_group as pg
from stackd.drivers.base import EngineStatus, ProcessInfo
from stackd.drivers.process_engine import Engine, describe_exit
from stackd.errors import DriverFailed

if TYPE_CHECKING:  # aiohttp (~0.1 s) is imported by the first probe, not at the daemon's start
    import aiohttp

Sleep = Callable[[float], Awaitable[None]]
Failure = Callable[[str], str]  # what went wrong -> the message, with the engine's last log lines


class MemberView(Protocol):
    """What is read here of a process member (``stackd.drivers.process._Member``)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def engine(self) -> Engine | None: ...
    @property
    def changed(self) -> asyncio.Event: ...
    @property
    def generation(self) -> int: ...
    @property
    def ready_at(self) -> float | None: ...
    @property
    def wanted(self) -> bool: ...
    @property
    def restarts(self) -> int: ...
    @property
    def exits(self) -> int: ...
    @property
    def last_exit(self) -> str | None: ...
    @property
    def log_path(self) -> Path | None: ...
    @property
    def restart_task(self) -> asyncio.Task[None] | None: ...
    @property
    def model(self) -> Model | None: ...


async def wait_healthy(
    client: aiohttp.ClientSession, name: str, model: Model, engine: Engine, sleep: Sleep, failure: Failure
) -> float:
    """Poll the health path until 2xx; the seconds left of the start deadline (for the warm-up)."""
    import aiohttp  # loaded with ``client``

    health = model.health
    path = health.path if health else DEFAULT_PROCESS_HEALTH_PATH
    timeout_s = health.start_timeout_s if health else DEFAULT_PROCESS_START_TIMEOUT_S
    url = engine.record.endpoint.split("://", 1)[0] + "://127.0.0.1:" + f"{engine.record.port}{path}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer yet"
    while True:
        if engine.exited():
            what = f"{describe_exit(engine.exit_code())} before it was ready"
            raise DriverFailed(failure(what), model=name)
        try:
            wait = aiohttp.ClientTimeout(total=min(2.0, max(0.1, deadline - loop.time())))
            async with client.get(url, timeout=wait) as resp:
                status = resp.status
            if 200 <= status < 300:
                return deadline - loop.time()
            last = f"HTTP {status} from {url}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = f"{type(exc).__name__} from {url}"
        if loop.time() >= deadline:
            what = (
                f"was not ready within {timeout_s:g} s "
                f"({last}); raise health.start_timeout_s if it loads slowly"
            )
            raise DriverFailed(failure(what), model=name)
        # Often at first: the wait is added to every switch (the target is <= 100 ms of
        # overhead); a refused connect costs microseconds, a slow engine is polled less.
        waited = loop.time() - (deadline - timeout_s)
        await sleep(0.01 if waited < 5 else 0.05 if waited < 30 else 0.25)


async def warm_up(
    client: aiohttp.ClientSession, name: str, model: Model, engine: Engine, left_s: float, failure: Failure
) -> None:
    """One 1-token answer before the engine counts as ready: its first is slow (10.8 s, then
    0.05 s, for SmolLM2 on llama-cpp-python at load 8), and no caller should be that one."""
    import aiohttp  # loaded with ``client``

    url = f"{engine.record.endpoint.rstrip('/')}/chat/completions"
    body = {
        "model": model.request_model or name,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
    }
    try:
        wait = aiohttp.ClientTimeout(total=max(left_s, 0.1))
        async with client.post(url, json=body, timeout=wait) as resp:
            resp.raise_for_status()
            await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        what = (
            f"answered its health path but not a 1-token warm-up chat at {url} "
            f"({type(exc).__name__}: {exc}); raise health.start_timeout_s, or set "
            "process.warmup: false"
        )
        raise DriverFailed(failure(what), model=name) from exc


def engine_status(
    name: str,
    state: str,
    why: str | None,
    *,
    restarts: int,
    limit: int,
    restart_pending: bool,
    generation: int,
) -> EngineStatus:
    """What a caller is told of a member's engine (``EngineReadiness.engine_status``).

    ``restart_pending``: a restart task runs and the member is wanted. A restart goes through
    starting, and stopping and failed when a try fails: all of it is one restart in progress
    until the policy gives up."""
    engine = f"engine {name}"
    restarting = state == "restarting" or restart_pending
    match state:
        case "ready":
            return EngineStatus("serving", f"{engine} is ready", generation)
        case _ if restarting:  # the counter moves as a try starts: before it, the next one is due
            n = restarts + (state in ("restarting", "failed"))
            reason = f"{engine} {why}, restart {n}/{limit} in progress"
            return EngineStatus("waiting", reason, generation)
        case "starting":
            return EngineStatus("waiting", f"{engine} is starting", generation)
        case "failed":
            return EngineStatus("down", f"{engine} {why or 'failed to start'}", generation)
        case "exited":
            return EngineStatus("down", f"{engine} {why} and was not restarted", generation)
        case _:
            return EngineStatus("down", f"{engine} is {state}", generation)


def member_status(member: MemberView) -> EngineStatus:
    """What a caller is told of the member's engine (``EngineReadiness.engine_status``)."""
    runtime = member.model.process if member.model is not None else None
    task = member.restart_task
    return engine_status(
        member.name,
        member.state,
        member.last_exit,
        restarts=member.restarts,
        limit=runtime.restart_limit if runtime is not None else 0,
        restart_pending=task is not None and not task.done() and member.wanted,
        generation=member.generation,
    )


async def wait_serving(member: MemberView, timeout_s: float) -> EngineStatus:
    """The member's status once it serves or is down, or at the timeout (``EngineReadiness``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        status = member_status(member)
        dead = status.phase == "serving" and died_unseen(member)
        left = deadline - loop.time()
        if status.phase == "down" or (status.phase == "serving" and not dead) or left <= 0:
            return status
        changed = member.changed
        # A dead engine's exit is handled within milliseconds; look again soon all the same.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(left, 0.1) if dead else left):
                await changed.wait()


def died_unseen(member: MemberView) -> bool:
    """The engine looks ready but has died: its exit is not handled yet (a moment after a kill)."""
    engine = member.engine
    return engine is None or engine.exited() or pg.has_exited(engine.pid)


def process_info(member: MemberView, log_tail: Sequence[str]) -> ProcessInfo:
    """What status and metrics show of a member; ``log_tail`` only when it died or failed."""
    engine, state = member.engine, member.state
    pid = engine.pid if engine else None
    return ProcessInfo(
        model=member.name,
        state=state,
        pid=pid,
        port=engine.record.port if engine else None,
        endpoint=engine.record.endpoint if engine else None,
        started_at=engine.record.started_at if engine else None,
        restarts=member.restarts,
        exits=member.exits,
        last_exit=member.last_exit,
        log_path=str(member.log_path) if member.log_path else None,
        log_tail=tuple(log_tail) if state in ("exited", "failed", "restarting") else (),
        pids=pg.tree_pids(pid) if pid else (),
        rss_mib=pg.tree_rss_mib(pid) if pid else None,
        ready_at=member.ready_at if state == "ready" else None,
    )
