"""The live role table: which model serves each role right now.

The manager owns it and replaces it atomically (one attribute assignment) once the new
backends are ready. Readers take ``current`` once per request and keep that snapshot, so a
request in flight finishes on the binding it started with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RoleTable:
    stack: str | None
    bindings: Mapping[str, str] = field(default_factory=dict)  # role -> model
    members: frozenset[str] = frozenset()
    version: int = 0


class LiveRoles:
    """Holder of the current ``RoleTable``. Swapping is a single reference assignment."""

    def __init__(self, table: RoleTable | None = None) -> None:
        self._table = table or RoleTable(stack=None)
        self.in_flight = InFlight()

    @property
    def current(self) -> RoleTable:
        return self._table

    def swap(self, table: RoleTable) -> None:
        self._table = RoleTable(table.stack, dict(table.bindings), table.members, self._table.version + 1)


class InFlight:
    """Requests running on each model now. The router counts its attempts here; a switch waits
    for a model's count to reach zero before stopping it, so a request that started on the old
    binding finishes there (bounded by the caller's timeout). Event-loop only, no locks."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def count(self, model: str) -> int:
        return self._counts.get(model, 0)

    @contextmanager
    def using(self, model: str) -> Iterator[None]:
        self.begin(model)
        try:
            yield
        finally:
            self.end(model)

    def begin(self, model: str) -> None:
        """A request starts on ``model`` (``end`` it in a ``finally``; ``using`` does both)."""
        self._counts[model] = self._counts.get(model, 0) + 1

    def end(self, model: str) -> None:
        left = self._counts[model] - 1
        if left:
            self._counts[model] = left
        else:
            del self._counts[model]
            idle = self._idle.pop(model, None)
            if idle is not None:
                idle.set()

    async def wait_idle(self, model: str, timeout_s: float) -> bool:
        """True once no request runs on ``model``; False if some still run after ``timeout_s``."""
        if not self._counts.get(model):
            return True
        idle = self._idle.setdefault(model, asyncio.Event())
        try:
            async with asyncio.timeout(timeout_s):
                await idle.wait()
        except TimeoutError:
            return False
        return True


class LiveEndpoints:
    """Where each process member answers right now: its port is picked at every start, so its
    base URL lives here, not in the config. The process driver sets and clears it; the router
    and the health probes read it, falling back to the configured endpoint for other members."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}

    def get(self, model: str) -> str | None:
        return self._urls.get(model)

    def set(self, model: str, url: str) -> None:
        self._urls[model] = url

    def clear(self, model: str) -> None:
        self._urls.pop(model, None)

    def all(self) -> dict[str, str]:
        return dict(self._urls)
