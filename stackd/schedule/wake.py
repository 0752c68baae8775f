"""The wake seam: what a gateway or tool call asks before it routes, and what it is told.

``Waker.wake(name)`` is given the name a caller used (a gateway ``model``: a role, a preset, or
``reason`` / ``reason:effort=N``) and, when the active stack lacks what it names but the stack
the day policy holds or schedules has it, returns after that stack is up (``Woken``: which stack,
how long the call waited). It returns None when nothing needed waking: the call then routes as it
always did. ``Waker.begin(name)`` starts the same wake without waiting for it and hands back a
``Waking``, so that a streaming caller can be told it waits (SSE comments) while the switch runs.
The daemon's implementation is ``stackd.manager.day.DayDriver``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from stackd.config.models import StacksConfig


@dataclass(frozen=True)
class Woken:
    """A call waited ``waited_s`` for ``stack`` to wake (switch ``switch_id``; None: it was already
    up when the call's wait ended, woken by the same switch as another call)."""

    stack: str
    waited_s: float
    switch_id: str | None

    def to_dict(self) -> dict[str, object]:
        return {"woke": self.stack, "waited_s": round(self.waited_s, 3), "switch_id": self.switch_id}


class Waking(Protocol):
    """One call's wait for a wake that ``Waker.begin`` started (the switch is shared by every
    call waiting for the same stack)."""

    @property
    def stack(self) -> str: ...

    def left_s(self) -> float:
        """How much longer this call may wait (its role's bound, less what it waited)."""
        ...

    def doing(self) -> str:
        """What the wake is doing now, in one line (a stream's loading indication)."""
        ...

    async def wait(self, at_most_s: float | None = None) -> Woken | None:
        """Wait for the stack, at most ``at_most_s`` (None: the rest of the call's bound). The
        ``Woken`` once it is up; None when ``at_most_s`` passed first and the call may wait on.
        Raises a ``StackdError`` when the call's bound passes or the switch fails; the switch
        goes on either way (another call, or the next, may be served by it)."""
        ...


class Waker(Protocol):
    def begin(self, name: str) -> Waking | None:
        """Start waking the stack that serves ``name`` if the active one lacks it, without
        waiting; None when nothing needs waking."""
        ...

    async def wake(self, name: str) -> Woken | None:
        """``begin`` and wait: blocks (bounded) while the switch runs. Raises a ``StackdError``
        when the bound passes or the switch fails."""
        ...


_REASON_NAME = re.compile(r"^reason(?::effort=(\d+))?$")
DEFAULT_EFFORT = 5  # as stackd.router.routes reads a bare ``reason`` (schedule may not import router)
MAX_EFFORT = 10


def reason_chain(config: StacksConfig, stack: str, effort: int) -> list[str]:
    """The strategies a ``reason`` call of ``effort`` tries on ``stack``, picked as
    ``stackd.router.routes.chain_for_effort`` picks them (the first effort rule with
    ``effort <= up_to``; ``chain: null`` is the stack's); a test holds the two together."""
    for rule in config.reason.effort:
        if effort <= rule.up_to:
            return list(rule.chain) if rule.chain is not None else config.chain_for(stack)
    return config.chain_for(stack)


def reason_needs(config: StacksConfig, stack: str, effort: int) -> tuple[str | None, str | None]:
    """(role, model) of the first strategy of the effort's chain that ``stack`` serves: what
    answers a ``reason`` call there."""
    s = config.stacks[stack]
    for name in reason_chain(config, stack, effort):
        strategy = config.reason.strategies.get(name)
        if strategy is None:
            continue
        if strategy.role and strategy.role in s.roles:
            return strategy.role, None
        for model in strategy.models:
            if model in s.member_names:
                return None, model
    return None, None


def call_needs(config: StacksConfig, name: str, upper: str | None = None) -> tuple[str | None, str | None]:
    """(role, model) that a gateway model name needs: a role's name, a preset's role or model or
    slice model; for ``reason`` / ``reason:effort=N``, what would answer it on ``upper`` (the
    stack the day policy wants: ``reason_needs``), so that a reason call wakes it when the
    active stack lacks that role; (None, None) for unknown names."""
    if name in config.roles:
        return name, None
    reason = _REASON_NAME.match(name)
    if reason is not None:
        effort = int(reason.group(1)) if reason.group(1) else DEFAULT_EFFORT
        if upper not in config.stacks or not 1 <= effort <= MAX_EFFORT:
            return None, None  # a bad effort is the route's 404 to give
        assert upper is not None
        return reason_needs(config, upper, effort)
    preset_name, _, slice_name = name.partition(":")
    preset = config.presets.get(preset_name)
    if preset is None:
        return None, None
    if preset.slices:
        return None, preset.slices.get(slice_name or preset.default_slice or "")
    return preset.role, preset.model
