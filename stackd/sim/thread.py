"""Run a simulator on its own event loop in a background thread, for synchronous tests and tools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

if TYPE_CHECKING:
    from stackd.sim.control import Fault, RecordedRequest, SimControl
    from stackd.sim.server import SimServer

_T = TypeVar("_T")


class SimThread:
    """A started simulator in a daemon thread. ``stop()`` (or leaving the ``with``) shuts it down."""

    def __init__(self, make_server: Callable[[], SimServer], start_timeout_s: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: SimServer | None = None
        self._error: BaseException | None = None
        self._make_server = make_server
        self._thread = threading.Thread(target=self._run, name="stackd-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout_s):
            raise TimeoutError("simulator thread did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._make_server()
            self._loop.run_until_complete(self._server.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._server.stop())
        self._loop.close()

    @property
    def server(self) -> SimServer:
        assert self._server is not None
        return self._server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def control(self) -> SimControl:
        return self.server.control

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def call(self, coro_factory: Callable[[], Coroutine[object, object, _T]], timeout_s: float = 10.0) -> _T:
        """Run ``coro_factory()`` on the simulator's loop and return its result."""
        future = asyncio.run_coroutine_threadsafe(coro_factory(), self._loop)
        return future.result(timeout_s)

    def set_fault(self, fault: Fault | str) -> None:
        self.call(lambda: self.server.set_fault(fault))

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
