"""Energy from power samples: watt-seconds integrated per GPU and per stack, pure arithmetic.

``EnergyMeter.sample(at, stack, devices)`` is given each reading (Unix seconds, the stack active
then, the devices as read); the interval since the previous sample is charged at the previous
sample's draw (a left Riemann sum: the draw measured at the start of a period is what the card
drew through it) to the stack that was active then. A gap longer than ``max_gap_s`` (the daemon
was stopped, sampling stalled) is not integrated: energy nobody measured is not invented.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from stackd.hardware.types import GpuDevice

DEFAULT_MAX_GAP_S = 300.0


@dataclass
class EnergyMeter:
    max_gap_s: float = DEFAULT_MAX_GAP_S
    joules_by_gpu: dict[int, float] = field(default_factory=dict)
    joules_by_stack: dict[str, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    _last: tuple[float, str | None, dict[int, float]] | None = None

    def sample(self, at: float, stack: str | None, devices: Iterable[GpuDevice]) -> dict[str, float]:
        """Take a reading; returns the joules charged to each stack by this sample (for persisting)."""
        power = {d.index: d.power_w for d in devices if d.power_w is not None}
        for d in devices:
            self.names[d.index] = d.name
        charged: dict[str, float] = {}
        if self._last is not None:
            then, then_stack, then_power = self._last
            dt = at - then
            if 0 < dt <= self.max_gap_s:
                for index, watts in then_power.items():
                    self.joules_by_gpu[index] = self.joules_by_gpu.get(index, 0.0) + watts * dt
                total = sum(then_power.values()) * dt
                if then_stack is not None and total:
                    self.joules_by_stack[then_stack] = self.joules_by_stack.get(then_stack, 0.0) + total
                    charged[then_stack] = total
        self._last = (at, stack, power)
        return charged


def watt_hours(joules: float) -> float:
    return joules / 3600.0
