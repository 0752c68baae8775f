"""The data path's one pooled HTTP session, and the sessions a reload replaced.

A reload that changes ``reason.timeouts.connect_s`` needs a new session; calls in flight keep the
one they took. The old session is closed once no call runs on a model that had a backend on it,
at the latest after ``within_s`` (the longest a call on one backend may last).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from stackd.roles import InFlight

if TYPE_CHECKING:  # aiohttp (~0.1 s) is imported when a session is first made
    import aiohttp


class HttpPool:
    def __init__(self, in_flight: InFlight) -> None:
        self._in_flight = in_flight
        self.current: aiohttp.ClientSession | None = None
        self._models: set[str] = set()  # models given a backend on ``current`` since the last reload
        self._retiring: dict[asyncio.Task[None], aiohttp.ClientSession] = {}

    def session(self, connect_s: float) -> aiohttp.ClientSession:
        """The one pooled session (created inside the running loop)."""
        if self.current is None:
            import aiohttp

            self.current = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=60),
                cookie_jar=aiohttp.DummyCookieJar(),  # callers share the pool: no cookie may cross calls
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_s),
            )
        return self.current

    def used_by(self, models: Iterable[str]) -> None:
        """These models had a backend on the current session."""
        self._models.update(models)

    def retire(self, within_s: float) -> None:
        """The next backend gets a new session; the current one closes once unused."""
        if self.current is None:
            return
        session, self.current = self.current, None
        models, self._models = self._models, set()
        task = asyncio.get_running_loop().create_task(self._close_when_unused(session, models, within_s))
        self._retiring[task] = session
        task.add_done_callback(self._retiring.pop)

    async def _close_when_unused(
        self, session: aiohttp.ClientSession, models: set[str], within_s: float
    ) -> None:
        """Close a replaced session once no call runs on ``models`` (every model that had a
        backend on it), or after ``within_s``. A call on it holds its model's in-flight count
        until it ends; a call begun after the reload uses the new session."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        for model in sorted(models):
            await self._in_flight.wait_idle(model, max(0.0, deadline - loop.time()))
        await session.close()

    async def aclose(self) -> None:
        """Close every session, the replaced ones at once. Idempotent."""
        for task, session in list(self._retiring.items()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await session.close()
        if self.current is not None:
            await self.current.close()
            self.current = None
