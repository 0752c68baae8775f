"""``PowerSampler``: reads the GPUs on a timer and integrates their power into energy per stack.

A periodic job (``jobs()``): each run reads the hardware through the manager's injected reader
(NVML, or a scripted scenario's figures), hands the reading to the pure ``EnergyMeter`` with the
stack active now, and adds what it charged to the state DB (``stackd usage`` shows Wh per stack).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from stackd.hardware.energy import EnergyMeter
from stackd.state.energy import EnergyStore

if TYPE_CHECKING:
    from stackd.manager import ModelStackManager

DEFAULT_INTERVAL_S = 10.0


class PowerSampler:
    def __init__(
        self,
        manager: ModelStackManager,
        store: EnergyStore | None = None,
        meter: EnergyMeter | None = None,
        clock: Callable[[], float] = time.time,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.manager = manager
        self.store = store
        self.meter = meter or EnergyMeter()
        self.clock = clock
        self.interval_s = interval_s

    async def sample(self) -> tuple[bool, str]:
        hardware = await self.manager.read_hardware()
        now = self.clock()
        charged = self.meter.sample(now, self.manager.active_stack, hardware.gpus)
        if charged and self.store is not None:
            await asyncio.to_thread(self.store.add, charged, now)
        drawn = [f"GPU {g.index} {g.power_w:.0f} W" for g in hardware.gpus if g.power_w is not None]
        return True, "; ".join(drawn) or "no power reading"

    def jobs(self) -> dict[str, tuple[float, Callable[[], Awaitable[tuple[bool, str]]]]]:
        return {"power": (self.interval_s, self.sample)}
