"""A container's log as the Docker engine keeps it: the tail, or the tail and then every new line.

The docker SDK blocks, so the tail is read in a worker thread, and a follow runs the SDK's
stream in a thread of its own that hands each line to the event loop. Closing the follow (the
client left, the daemon stops) closes the stream's socket, which ends that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

from stackd.drivers.docker_engine import from_env, refused, unreachable
from stackd.errors import DriverUnavailable, StackdError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

T = TypeVar("T")


class LogStream(Protocol):
    """What ``Container.logs(stream=True)`` gives: chunks of bytes, closed to stop following."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class NoSuchContainer(StackdError):
    status = 404


class DockerLogs:
    """``ContainerLogs`` (stackd.api.member_logs) over a Docker engine; the client is made at
    the first read (in the worker thread), and again after the engine was unreachable."""

    def __init__(self, client_factory: Callable[[], DockerClient] = from_env) -> None:
        self._client_factory = client_factory
        self._client: DockerClient | None = None

    async def log_lines(self, container: str, lines: int) -> list[str]:
        raw: bytes = await asyncio.to_thread(self._read, container, lambda c: c.logs(tail=lines))
        return [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]

    async def follow_log(self, container: str, lines: int) -> AsyncIterator[str]:
        """Opens the stream (raising here, before an answer begins), then gives its lines."""
        stream: LogStream = await asyncio.to_thread(
            self._read, container, lambda c: c.logs(stream=True, follow=True, tail=lines)
        )
        return self._lines_of(container, stream)

    async def _lines_of(self, container: str, stream: LogStream) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def hand_over(line: str | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed first
                loop.call_soon_threadsafe(queue.put_nowait, line)

        def pump() -> None:
            try:
                for line in _lines(stream):
                    hand_over(line)
            except Exception:  # the stream was closed under it, or the engine went away
                pass
            finally:
                hand_over(None)

        threading.Thread(target=pump, name=f"logs-{container}", daemon=True).start()
        try:
            while (line := await queue.get()) is not None:
                yield line
        finally:
            with contextlib.suppress(Exception):
                stream.close()

    def _read(self, container: str, read: Callable[[Container], T]) -> T:
        try:
            if self._client is None:
                self._client = self._client_factory()
            from docker.errors import NotFound  # loaded with the client

            try:
                return read(self._client.containers.get(container))
            except NotFound:
                raise NoSuchContainer(
                    f"container '{container}' does not exist: the member is not running and left no container"
                ) from None
        except StackdError:
            raise
        except Exception as exc:
            if not (unreachable(exc) or refused(exc)):
                raise
            self._client = None
            raise DriverUnavailable(
                f"Docker engine not reachable at {os.environ.get('DOCKER_HOST') or 'its default socket'}: "
                f"{type(exc).__name__}; start dockerd or set DOCKER_HOST"
            ) from exc


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines out of the stream's chunks (a chunk may end mid-line or hold many)."""
    partial = b""
    for chunk in chunks:
        *complete, partial = (partial + chunk).split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if line.strip():
                yield line
    if partial.strip():
        yield partial.decode("utf-8", "replace")
