"""The data path's one pooled HTTP client, and the clients a reload replaced.

A reload that changes ``reason.timeouts.connect_s`` needs a new client; calls in flight keep the
one they took. The old client is closed once no call runs on a model that had a backend on it,
at the latest after ``within_s`` (the longest a call on one backend may last).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from stackd.roles import InFlight
from stackd.router.http_client import HttpClient


class HttpPool:
    def __init__(self, in_flight: InFlight) -> None:
        self._in_flight = in_flight
        self.current: HttpClient | None = None
        self._models: set[str] = set()  # models given a backend on ``current`` since the last reload
        self._retiring: dict[asyncio.Task[None], HttpClient] = {}

    def client(self, connect_s: float) -> HttpClient:
        """The one pooled client (used inside the running loop)."""
        if self.current is None:
            self.current = HttpClient(connect_s)
        return self.current

    def used_by(self, models: Iterable[str]) -> None:
        """These models had a backend on the current client."""
        self._models.update(models)

    def retire(self, within_s: float) -> None:
        """The next backend gets a new client; the current one closes once unused."""
        if self.current is None:
            return
        client, self.current = self.current, None
        models, self._models = self._models, set()
        task = asyncio.get_running_loop().create_task(self._close_when_unused(client, models, within_s))
        self._retiring[task] = client
        task.add_done_callback(self._retiring.pop)

    async def _close_when_unused(self, client: HttpClient, models: set[str], within_s: float) -> None:
        """Close a replaced client once no call runs on ``models`` (every model that had a
        backend on it), or after ``within_s``. A call on it holds its model's in-flight count
        until it ends; a call begun after the reload uses the new client."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        for model in sorted(models):
            await self._in_flight.wait_idle(model, max(0.0, deadline - loop.time()))
        await client.close()

    async def aclose(self) -> None:
        """Close every client, the replaced ones at once. Idempotent."""
        for task, client in list(self._retiring.items()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
        if self.current is not None:
            await self.current.close()
            self.current = None
