"""Where a routed call starts and where it may go next. Pure: the controls' state comes in as values.

Precedence, the first that applies wins:

1. the kill switch: the largest slice, no promotion, budgets ignored (an operator's override);
2. a pinned caller (``routing.callers``): its slice and temperature; promoted only if it says so;
3. a named slice (``elastic:9b``): that slice, promoted only up;
4. a time pin (``routing.pins``): at least its slice (the estimate when larger), promoted up;
5. the estimator's slice. Only here do budgets act: a slice whose daily tokens are spent or
   whose rate limit is reached falls to the largest slice below it that has room (the guide's
   "degrade gracefully to 9b for all but the most critical paths"; pins are those paths).

Promotion goes to the next larger slice with room; over-budget slices are passed over. A call
is never served below its floor (the pinned or named slice), and its slices only go up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stackd.config.slices import SliceRouting, TimePin
from stackd.router.slices.estimator import Estimate

OverBudget = Callable[[str], str | None]  # slice -> why it has no room now, or None


@dataclass(frozen=True, slots=True)
class Start:
    slice: str
    decided_by: str  # kill_switch, caller:NAME, named, time_pin, a signal name, or default
    reason: str
    floor: str  # no answer comes from a slice below this one
    can_promote: bool = True
    temperature: float | None = None  # a pinned caller's fixed temperature
    falls: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)  # (from, to, why)


def rank(routing: SliceRouting, slice_name: str) -> int:
    return routing.order.index(slice_name)


def active_pin(routing: SliceRouting, now: float) -> TimePin | None:
    """The first time pin whose window holds ``now`` (epoch seconds, read as UTC)."""
    clock = datetime.fromtimestamp(now, UTC).strftime("%H:%M")
    for pin in routing.pins:
        inside = pin.start <= clock < pin.end if pin.start <= pin.end else not pin.end <= clock < pin.start
        if inside:
            return pin
    return None


def plan_start(
    routing: SliceRouting,
    estimate: Estimate,
    *,
    kill_switch: bool = False,
    caller: str | None = None,
    named: str | None = None,
    time_pin: TimePin | None = None,
    over_budget: OverBudget = lambda _: None,
) -> Start:
    largest = routing.order[-1]
    if kill_switch:
        return Start(largest, "kill_switch", "the kill switch forces the largest slice", largest, False)
    pin = routing.callers.get(caller) if caller is not None else None
    if pin is not None:
        why = f"caller '{caller}' is pinned to {pin.slice}"
        return Start(pin.slice, f"caller:{caller}", why, pin.slice, pin.promote, pin.temperature)
    if named is not None:
        return Start(named, "named", f"the call named slice {named}", named)
    if time_pin is not None:
        if rank(routing, estimate.slice) > rank(routing, time_pin.slice):
            chosen, why = estimate.slice, f"{estimate.reason}, above the time pin's {time_pin.slice}"
        else:
            chosen, why = time_pin.slice, f"time pin {time_pin.start}-{time_pin.end} UTC"
        return Start(chosen, "time_pin", why, time_pin.slice)
    chosen = estimate.slice
    falls: list[tuple[str, str, str]] = []
    blocked = over_budget(chosen)
    if blocked is not None:
        below = [s for s in reversed(routing.order[: rank(routing, chosen)]) if over_budget(s) is None]
        if below:
            falls.append((chosen, below[0], blocked))
            chosen = below[0]
    decided_by = estimate.signal or "default"
    return Start(chosen, decided_by, estimate.reason, routing.order[0], True, None, tuple(falls))


def next_slice(
    routing: SliceRouting, current: str, over_budget: OverBudget = lambda _: None
) -> tuple[str | None, list[tuple[str, str]]]:
    """The next larger slice with room (None: none), and the (slice, why) of those passed over."""
    passed: list[tuple[str, str]] = []
    for candidate in routing.order[rank(routing, current) + 1 :]:
        blocked = over_budget(candidate)
        if blocked is None:
            return candidate, passed
        passed.append((candidate, blocked))
    return None, passed
