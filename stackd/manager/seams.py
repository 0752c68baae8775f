"""The manager's seams: the ``Drivers`` it is built over, the ``ManagerOptions`` that tune it,
and ``Effects``, what the rest of the daemon (leases, their grants) may ask of it.

A part that needs the manager types against ``Effects``, not ``ModelStackManager``: observe,
plan, run steps with their log, touch, and the worker. A test can then drive that part over an
in-memory manager, and the manager stays one owner with a small public face.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from stackd.config.models import StacksConfig
from stackd.drivers.base import ContainerDriver, HealthChecker, OllamaDriver, ProcessDriver, RemoteProber
from stackd.hardware.types import HardwareSnapshot
from stackd.planner import plan_switch
from stackd.planner.plan import ObservedState, Plan, Step

if TYPE_CHECKING:
    from stackd.manager.events import EventLog
    from stackd.manager.execution import Execution
    from stackd.manager.observe import Observation
    from stackd.manager.switch import Switch

T = TypeVar("T")
Planner = Callable[[StacksConfig, ObservedState, str, HardwareSnapshot], Plan]
# model -> the largest MiB it was measured to hold under its current config (state store)
Footprints = Callable[[StacksConfig], Mapping[str, int]]
# Told each member a switch started, once ready, with the config it started under.
OnStarted = Callable[[str, StacksConfig], None]


@dataclass(frozen=True)
class Drivers:
    """The engines the manager drives, one per kind (a simulator or an in-memory fake is another)."""

    containers: ContainerDriver
    processes: ProcessDriver
    ollama: OllamaDriver
    remotes: RemoteProber
    health: HealthChecker


def _no_footprints(config: StacksConfig) -> Mapping[str, int]:
    return {}


def _nobody_told(model: str, config: StacksConfig) -> None:
    """No one measures what a switch started (tests that do not care)."""


@dataclass(frozen=True)
class ManagerOptions:
    """How the manager is tuned; every field has the daemon's default but ``drain_s``.

    ``clock`` (monotonic) times idle TTLs and probe intervals; ``wall_clock`` stamps what is
    shown and persisted. ``repair_on_start``: at a start with no interrupted switch, re-apply
    the persisted stack; when False, only bind the roles of members found up and report the
    rest as drift. ``drain_s``: seconds between a role swap and the first stop of a backend it
    replaced (the daemon sets it; 0 suits in-memory tests). ``footprints``: the remembered
    measured sizes of the config's members, budgeted when larger than declared. ``on_started``:
    told each member a switch started (the daemon measures its footprint)."""

    planner: Planner = plan_switch
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    step_timeout_s: float = 300.0
    keep_switches: int = 50
    repair_on_start: bool = True
    drain_s: float = 0.0
    footprints: Footprints = field(default=_no_footprints)
    on_started: OnStarted = field(default=_nobody_told)


class Effects(Protocol):
    """What a part of the daemon beside the manager (leases and their grants) may ask of it."""

    @property
    def config(self) -> StacksConfig: ...
    @property
    def active_stack(self) -> str | None: ...
    @property
    def current_switch(self) -> Switch | None: ...
    @property
    def wall_clock(self) -> Callable[[], float]: ...
    def footprints(self, config: StacksConfig) -> Mapping[str, int]: ...
    async def observe_detailed(self) -> Observation: ...
    async def read_hardware(self) -> HardwareSnapshot: ...
    async def plan(self, target: str) -> Plan: ...
    async def run_steps(
        self,
        steps: tuple[Step, ...],
        config: StacksConfig,
        log: EventLog,
        before_step: Callable[[Step], Awaitable[None]] | None = None,
    ) -> Execution: ...
    async def run_exclusive(self, job: Callable[[], Awaitable[T]]) -> T: ...
    def touch(self, model: str) -> None: ...
    def last_used(self, model: str) -> float | None: ...
