"""``GET /members/{name}/logs``: an engine's own log, for ``stackd logs MEMBER [-f]``.

A ``process`` member's log is its file, ``STATE_DIR/logs/NAME.log`` (every run, each after a
``---- stackd: start`` line); a ``docker`` member's, its container's log as the Docker engine
keeps it. Ollama and remote members have no engine of stackd's: the answer says where to look.

``?lines=N`` (default 100) is the tail, without the health probes' requests the engine logged
(``stackd.drivers.probe_lines``; ``?probes=true`` keeps them); ``?follow=true`` answers SSE, ``data: {"line": "..."}``
per line, the tail first, then each new line as the engine writes it, until the client leaves or
the daemon stops (``Followers.close``: uvicorn waits for open answers before it shuts down). A
file is polled (every 0.25 s; a log cut by ``cap_log`` is read again from its start); a container
is followed by the Docker engine in a worker thread.

Engine logs may hold prompts: the route needs the write token, on any bind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from stackd.config.models import Runtime
from stackd.drivers.probe_lines import is_probe_line
from stackd.errors import NotFound, StackdError
from stackd.services import Services

POLL_S = 0.25
MAX_LINES = 10_000
READ_BYTES = 1 << 20  # at most this much of a file per poll
TAIL_MAX_BYTES = 8 << 20  # a tail reads back at most this far (10,000 lines of 800 bytes)
# A container's tail is asked of the Docker engine by line count: this many more, so that some
# remain once the probes are dropped (a quiet engine logs little else).
PROBE_OVERREAD = 10


class NoEngineLog(StackdError):
    """The member has no engine log that stackd can read (Ollama, remote, no driver): the
    request is valid, the resource is not there (404, not 422)."""

    status = 404


class ContainerLogs(Protocol):
    """Containers' logs (``stackd.drivers.docker_logs.DockerLogs``; tests: an in-memory one)."""

    async def log_lines(self, container: str, lines: int) -> list[str]:
        """The container's last ``lines`` log lines (stdout and stderr). Raises a ``StackdError``
        that says why not (no such container, the engine is unreachable)."""
        ...

    async def follow_log(self, container: str, lines: int) -> AsyncIterator[str]:
        """Open the container's log, raising as ``log_lines`` does, and return an iterator of
        its last ``lines`` lines, then each new one until the container stops or it is closed."""
        ...


class Followers:
    """The open ``follow`` streams; ``close`` ends them all (the daemon is stopping)."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def close(self) -> None:
        self.closed.set()

    async def until_closed(self, lines: AsyncIterator[str]) -> AsyncIterator[str]:
        closing = asyncio.ensure_future(self.closed.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(lines))
                await asyncio.wait((following, closing), return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    await asyncio.wait((following,))  # the generator is free again: it can be closed
                    return
                try:
                    yield following.result()
                except StopAsyncIteration:
                    return
        finally:
            closing.cancel()
            aclose = getattr(lines, "aclose", None)
            if aclose is not None:
                await aclose()


async def follow_file(
    path: Path,
    lines: int,
    poll_s: float = POLL_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    drop: Drop | None = None,
) -> AsyncIterator[str]:
    """The file's last ``lines`` lines, then every line appended to it, polled; without those
    ``drop`` says."""
    position = _size(path)
    for line in await asyncio.to_thread(tail_lines, path, lines, TAIL_MAX_BYTES, drop):
        yield line
    partial = b""
    while True:
        await sleep(poll_s)
        size = _size(path)
        if size < position:  # cut in place (cap_log) or replaced: read the new one from its start
            position, partial = 0, b""
        if size == position:
            continue
        try:
            with path.open("rb") as f:
                f.seek(position)
                chunk = f.read(READ_BYTES)
        except OSError:
            continue
        position += len(chunk)
        *complete, partial = (partial + chunk).split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if line.strip() and not (drop and drop(line)):
                yield line


def tail_lines(
    path: Path, lines: int, max_bytes: int = TAIL_MAX_BYTES, drop: Drop | None = None
) -> list[str]:
    """The last ``lines`` non-blank lines of ``path`` that ``drop`` does not say, read backwards
    in blocks (at most ``max_bytes``); [] when it does not exist."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, 2)
            start, data = end, b""
            kept: list[str] = []
            while start > 0 and len(kept) <= lines and end - start < max_bytes:
                step = min(READ_BYTES, start, max_bytes - (end - start))
                start -= step
                f.seek(start)
                data = f.read(step) + data
                kept = _kept(data, start, drop)
    except OSError:
        return []
    return kept[-lines:]


def _kept(data: bytes, start: int, drop: Drop | None) -> list[str]:
    text = data.decode("utf-8", "replace").splitlines()
    if start > 0:
        text = text[1:]  # the first line read may be the end of a longer one
    return [line for line in text if line.strip() and not (drop and drop(line))]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


Tail = Callable[[int], Awaitable[list[str]]]
Follow = Callable[[int], Awaitable[AsyncIterator[str]]]
Drop = Callable[[str], bool]


def container_log(logs: ContainerLogs, container: str, drop: Drop | None) -> tuple[Tail, Follow]:
    """A docker member's log, read through the engine: (its tail, its follow), without ``drop``'s lines."""
    if drop is None:
        return (
            lambda lines: logs.log_lines(container, lines),
            lambda lines: logs.follow_log(container, lines),
        )

    async def container_tail(lines: int) -> list[str]:
        read = await logs.log_lines(container, min(lines * PROBE_OVERREAD, MAX_LINES))
        return [line for line in read if not drop(line)][-lines:]

    async def container_follow(lines: int) -> AsyncIterator[str]:
        # The tail and the new lines come as one stream: its tail may show fewer lines.
        return _without(await logs.follow_log(container, lines), drop)

    return container_tail, container_follow


def member_log(
    services: Services, containers: ContainerLogs | None, name: str, drop: Drop | None = None
) -> tuple[Tail, Follow]:
    """How to read member ``name``'s engine log: (its tail, its follow), without the lines
    ``drop`` says. Raises ``NotFound`` or ``NoEngineLog`` saying where that member's log is instead."""
    model = services.config.models.get(name)
    if model is None:
        raise NotFound(
            f"unknown member '{name}'; members: {', '.join(services.config.models)}",
            valid=list(services.config.models),
        )
    if model.runtime is Runtime.process:
        if services.processes is None:
            raise NoEngineLog(f"'{name}' is a process member, but this daemon runs no process driver")
        path = services.processes.log_file(name)

        async def file_tail(lines: int) -> list[str]:
            return await asyncio.to_thread(tail_lines, path, lines, TAIL_MAX_BYTES, drop)

        async def file_follow(lines: int) -> AsyncIterator[str]:
            return follow_file(path, lines, drop=drop)

        return file_tail, file_follow
    if model.runtime is Runtime.docker and model.docker is not None:
        if containers is None:
            raise NoEngineLog(f"'{name}' is a docker member, but this daemon reads no container logs")
        return container_log(containers, model.docker.container, drop)
    where = (
        "Ollama's own log (journalctl -u ollama, or the ollama container's)"
        if model.runtime is Runtime.ollama
        else "the provider's console"
    )
    raise NoEngineLog(
        f"'{name}' is a {model.runtime.value} member: stackd runs no engine for it; see {where}"
    )


async def _without(lines: AsyncIterator[str], drop: Drop) -> AsyncIterator[str]:
    """``lines`` without those ``drop`` says (closing ``lines`` when closed)."""
    try:
        async for line in lines:
            if not drop(line):
                yield line
    finally:
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()


def build_member_logs_router(
    services: Services, write: Callable[..., None], containers: ContainerLogs | None
) -> tuple[APIRouter, Followers]:
    """The route, and the ``Followers`` the daemon closes before uvicorn waits for open answers.
    ``containers`` reads docker members' logs (``DockerLogs``; None: they have none)."""
    router = APIRouter(dependencies=[Depends(write)])
    followers = Followers()

    @router.get(
        "/members/{name}/logs",
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "With follow: one event a line."}
        },
    )
    async def member_logs(
        name: str,
        lines: Annotated[int, Query(ge=1, le=MAX_LINES, description="How many of the last lines.")] = 100,
        follow: Annotated[bool, Query(description="Keep streaming new lines (SSE).")] = False,
        probes: Annotated[
            bool, Query(description="Keep the health probes' requests (left out by default).")
        ] = False,
    ) -> Any:
        tail, follow_lines = member_log(services, containers, name, None if probes else is_probe_line)
        if not follow:
            return {"member": name, "lines": await tail(lines)}
        stream = await follow_lines(lines)  # a log that cannot be read is refused before the answer

        async def events() -> AsyncIterator[bytes]:
            async for line in followers.until_closed(stream):
                yield f"data: {json.dumps({'line': line})}\n\n".encode()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router, followers
