"""Everything the daemon builds once at start and passes down (no hidden globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stackd.config.live import LiveConfig
from stackd.config.models import StacksConfig
from stackd.hardware.types import HardwareSnapshot
from stackd.roles import LiveEndpoints, LiveRoles
from stackd.settings import Settings

if TYPE_CHECKING:  # the parts import much of stackd; only their types are needed here
    from stackd.drivers.process import LocalProcessDriver
    from stackd.gpu.leases import LeaseCoordinator
    from stackd.manager import ModelStackManager
    from stackd.manager.day import DayDriver
    from stackd.manager.energy import PowerSampler
    from stackd.manager.periodic import PeriodicJobs
    from stackd.router import ReasonRouter
    from stackd.router.slices import SliceRouter
    from stackd.state.audit import AuditLog
    from stackd.state.keys import KeyStore
    from stackd.state.usage import UsageStore


@dataclass
class Services:
    settings: Settings
    roles: LiveRoles
    manager: ModelStackManager
    read_hardware: Callable[[], HardwareSnapshot]
    token: str
    token_source: str
    leases: LeaseCoordinator  # the one set of leases /leases, /status, the gateway and MCP share
    router: ReasonRouter | None = None
    slices: SliceRouter | None = None  # elastic slice routing over the router (api/slices.py)
    periodic: PeriodicJobs | None = None
    usage: UsageStore | None = None
    endpoints: LiveEndpoints = field(default_factory=LiveEndpoints)
    processes: LocalProcessDriver | None = None  # closed at shutdown
    day: DayDriver | None = None  # schedules, holds, idle downshift and wakes (stackd/schedule/)
    power: PowerSampler | None = None  # GPU power sampled into energy per stack
    keys: KeyStore | None = None  # API keys (stackd.api.keyring); None: the bootstrap token only
    audit: AuditLog | None = None  # control actions by key (stackd.api.gate)

    @property
    def live_config(self) -> LiveConfig:
        """The daemon's one live config: the manager's, which the router follows."""
        return self.manager.live_config

    @property
    def config(self) -> StacksConfig:
        """The config the daemon runs now; read it once per request (a reload swaps it)."""
        return self.manager.live_config.current
