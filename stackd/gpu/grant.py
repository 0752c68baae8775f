"""Applying a lease's grant: its stops and its start as one run of the manager's one
``PlanExecutor`` (``Effects.run_steps``: its undo puts back what was evicted when the start
fails), the bounded wait for NVML to show a stopped member's memory back before the next start;
and ``FootprintMeter``, the footprint of a member once it is ready (NVML's memory of its PIDs:
the process tree, or the container's host PIDs), remembered in the state store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from stackd.config.models import Model, Placement, StacksConfig
from stackd.drivers.base import ProcessDriver
from stackd.errors import DriverFailed, StackdError
from stackd.gpu.decide import LeaseDecision
from stackd.gpu.refusals import LeaseUnavailable
from stackd.hardware.types import HardwareSnapshot
from stackd.manager.events import EventLog
from stackd.manager.seams import Effects
from stackd.planner.footprints import footprint_digest
from stackd.planner.members import gib
from stackd.planner.plan import StartContainer, StartProcess, Step
from stackd.state.gpu import GpuJournal

log = logging.getLogger("stackd.gpu")

ContainerPids = Callable[[str, Model], Awaitable[tuple[int, ...]]]
Sleep = Callable[[float], Awaitable[None]]


class Grants:
    """Runs grants for the ``LeaseCoordinator`` (on the manager's worker).

    ``release_wait_s`` bounds the wait for NVML after a stop (polled every 0.5 s of ``sleep``);
    ``retry_after_s`` is what a refusal then tells the caller."""

    def __init__(
        self,
        manager: Effects,
        clock: Callable[[], float],
        sleep: Sleep,
        release_wait_s: float,
        retry_after_s: float,
    ) -> None:
        self.manager = manager
        self.clock = clock
        self._sleep = sleep
        self.release_wait_s = release_wait_s
        self.poll_s = retry_after_s

    async def apply(self, decision: LeaseDecision, config: StacksConfig, need_mib: int) -> None:
        """The stops and the start as one run of the manager's executor: a failed start undoes
        the evictions. After a stop the start waits until NVML shows the room back."""
        stopped = bool(decision.evicted)

        async def before(step: Step) -> None:
            if stopped and isinstance(step, StartContainer | StartProcess):
                await self._await_memory_back(step.model, need_mib, decision.evicted)

        log = EventLog(f"lease-{decision.model}", self.manager.wall_clock)
        execution = await self.manager.run_steps(decision.steps, config, log, before_step=before)
        if execution.ok:
            return
        if isinstance(execution.error, LeaseUnavailable):  # the memory never came back: the refusal as it is
            raise execution.error
        raise DriverFailed(execution.failure_sentence(None))

    async def _await_memory_back(self, model: str, need_mib: int, evicted: tuple[str, ...]) -> None:
        """Wait (bounded by ``release_wait_s``) until the card shows ``need_mib`` free; else refuse
        naming what still holds it. A stopped engine's memory can take a moment to come back."""
        deadline = self.clock() + self.release_wait_s
        device_index = self.manager.config.gpu.device
        while True:
            device = (await self.manager.read_hardware()).gpu(device_index)
            if device is None or device.free_mib >= need_mib:
                return
            if self.clock() >= deadline:
                top = sorted(device.processes, key=lambda p: p.used_mib, reverse=True)[:3]
                holders = ", ".join(f"{p.name} (pid {p.pid}) {gib(p.used_mib)}" for p in top) or "unknown"
                raise LeaseUnavailable(
                    f"{model} needs {gib(need_mib)} but GPU {device_index} shows {gib(device.free_mib)} free "
                    f"{self.release_wait_s:g} s after stopping {', '.join(evicted)}; still holding memory: "
                    f"{holders}",
                    code="memory_not_back",
                    retry_after_s=self.poll_s,
                )
            await self._sleep(min(0.5, self.release_wait_s))


class FootprintMeter:
    """Measures what a ready GPU member holds on the card (NVML's memory of its PIDs: the process
    tree, or the container's host PIDs) and remembers it in the state store. Built before the
    manager: its ``measure_later`` is the manager's ``on_started``; leases measure through it too.
    """

    def __init__(
        self,
        journal: GpuJournal,
        processes: ProcessDriver,
        read_hardware: Callable[[], HardwareSnapshot],
        container_pids: ContainerPids | None = None,
    ) -> None:
        self._journal = journal
        self._processes = processes
        self._read_hardware = read_hardware
        self._container_pids = container_pids
        self._measuring: set[asyncio.Task[None]] = set()

    def measure_later(self, model: str, config: StacksConfig) -> None:
        """Measure a member that a switch started (the manager's ``on_started``), in the background."""
        spec = config.models.get(model)
        if spec is None or spec.placement != Placement.gpu:
            return
        task = asyncio.create_task(self._measure_quietly(model, config), name=f"stackd-measure-{model}")
        self._measuring.add(task)
        task.add_done_callback(self._measuring.discard)

    async def _measure_quietly(self, model: str, config: StacksConfig) -> None:
        try:
            await self.measure(model, config)
        except Exception:  # a measurement is a nicety; the declared size still budgets the member
            log.exception("measuring the GPU footprint of %s failed", model)

    async def measure(self, model: str, config: StacksConfig) -> None:
        """Remember what the ready member holds on the card (NVML per process through its PIDs)."""
        spec = config.models[model]
        pids: tuple[int, ...] = ()
        if spec.process is not None:
            info = next((p for p in self._processes.processes() if p.model == model), None)
            pids = info.pids if info is not None else ()
        elif spec.docker is not None and self._container_pids is not None:
            try:
                pids = await self._container_pids(model, spec)
            except StackdError:
                return  # a measurement is a nicety: the declared size still budgets it
        device = (await asyncio.to_thread(self._read_hardware)).gpu(config.gpu.device)
        if device is None or not pids:
            return
        used = {p.pid: p.used_mib for p in device.processes}
        mib = sum(used[pid] for pid in pids if pid in used)
        if mib > 0:
            await asyncio.to_thread(self._journal.record_footprint, model, footprint_digest(spec), mib)

    async def aclose(self) -> None:
        """Cancel the measurements still running."""
        for measuring in list(self._measuring):
            measuring.cancel()
        await asyncio.gather(*self._measuring, return_exceptions=True)
