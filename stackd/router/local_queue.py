"""The bounded, low-priority queue in front of the local GPU model (strategy 4).

Fallback traffic must never starve the orchestrator's user-facing chat on the same GPU model:
at most ``concurrency`` fallback calls run at once, at most ``size`` wait, and a call beyond
that is refused at once (the chain records "local queue full" and moves on).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from stackd.router import skips


class LocalQueueFull(Exception):
    pass


class LocalQueue:
    def __init__(self, size: int, concurrency: int) -> None:
        self._size = size
        self._slots = asyncio.Semaphore(concurrency)
        self.waiting = 0
        self.running = 0

    @asynccontextmanager
    async def slot(self, wait_s: float) -> AsyncIterator[None]:
        """Hold one run slot for the body. Raises ``LocalQueueFull`` at once when ``size`` calls
        already wait, or after ``wait_s`` without a slot."""
        if self._slots.locked() and self.waiting >= self._size:
            raise LocalQueueFull(skips.local_queue_full(self.waiting, self.running))
        self.waiting += 1
        try:
            async with asyncio.timeout(wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise LocalQueueFull(skips.no_queue_slot(wait_s)) from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()

    def to_dict(self) -> dict[str, int]:
        return {"waiting": self.waiting, "running": self.running, "size": self._size}
