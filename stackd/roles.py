"""The live role table: which model serves each role right now.

The manager owns it and replaces it atomically (one attribute assignment) once the new
backends are ready. Readers take ``current`` once per request and keep that snapshot, so a
request in flight finishes on the binding it started with.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    @property
    def current(self) -> RoleTable:
        return self._table

    def swap(self, table: RoleTable) -> None:
        self._table = RoleTable(table.stack, dict(table.bindings), table.members, self._table.version + 1)
