"""Callers never see swapping: a call whose route starts at an on-demand GPU member holds a lease
on it for the length of the call (a complete answer, or a stream until its last event).

``invoke_model`` with a preset bound to such a member and the gateway with such a model go
through ``CallLeases``: the lease makes the member resident (starting it, evicting idle members,
or waiting in the FIFO queue up to ``wait_s``), keeps the coordinator from evicting it while the
call runs, and is released after; the member then stays warm until its idle TTL.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from stackd.errors import NotFound
from stackd.gpu.decide import config_refusal
from stackd.gpu.leases import Lease, LeaseCoordinator
from stackd.router.routes import Route
from stackd.router.types import StreamBroken, StreamDone

T = TypeVar("T")
DEFAULT_WAIT_S = 60.0


class CallLeases:
    """Leases around calls. ``wait_s``: how long a call waits for its member's room."""

    def __init__(self, leases: LeaseCoordinator, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.leases = leases
        self.wait_s = wait_s
        # model -> whether a lease can hold it, for the (config, active stack) it was decided on:
        # asked on every gateway call, and the config alone decides it.
        self._leasable: dict[str, bool] = {}
        self._leasable_of: tuple[object, str | None] = (None, None)

    def model_of(self, route: Route) -> str | None:
        """The on-demand GPU member the route tries first, when a lease can hold it; else None."""
        first = next((t.model for t in route.targets if t.skip is None and t.model is not None), None)
        if first is None:
            return None
        manager = self.leases.manager
        config, stack = manager.config, manager.active_stack
        if self._leasable_of[0] is not config or self._leasable_of[1] != stack:
            self._leasable, self._leasable_of = {}, (config, stack)
        leasable = self._leasable.get(first)
        if leasable is None:
            leasable = self._leasable[first] = config_refusal(config, stack, first) is None
        return first if leasable else None

    async def _acquire(self, model: str) -> Lease:
        # The lease outlives the longest call the router allows; a release ends it sooner.
        ttl = self.leases.manager.config.reason.timeouts.total_s + 60.0
        return await self.leases.acquire(model, ttl_s=ttl, wait_s=self.wait_s)

    async def _release(self, lease: Lease) -> None:
        with contextlib.suppress(NotFound):  # it expired, or its model left the stack meanwhile
            await self.leases.release(lease.id)

    async def complete(self, route: Route, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` under a lease on the route's member, when it needs one."""
        model = self.model_of(route)
        if model is None:
            return await call()
        lease = await self._acquire(model)
        try:
            return await call()
        finally:
            await self._release(lease)

    async def stream(self, route: Route, items: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """``items()`` under a lease held until its last event (``StreamDone`` / ``StreamBroken``),
        its end, or its reader closing it."""
        model = self.model_of(route)
        lease = await self._acquire(model) if model is not None else None
        inner = items()
        try:
            async for item in inner:
                if lease is not None and isinstance(item, StreamDone | StreamBroken):
                    # The backend is done; readers often stop at this event without closing.
                    await self._release(lease)
                    lease = None
                yield item
        finally:
            close = getattr(inner, "aclose", None)  # a reader that left closes the backend's stream now
            try:
                if close is not None:
                    await close()
            finally:
                if lease is not None:
                    await self._release(lease)
