"""Everything the daemon builds once at start and passes down (no hidden globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stackd.config.models import StacksConfig
from stackd.hardware.types import HardwareSnapshot
from stackd.roles import LiveEndpoints, LiveRoles
from stackd.settings import Settings


@dataclass
class Services:
    settings: Settings
    config: StacksConfig
    roles: LiveRoles
    manager: Any  # stackd.manager.ModelStackManager
    read_hardware: Callable[[], HardwareSnapshot]
    token: str
    token_source: str
    router: Any = None  # stackd.router.ReasonRouter
    periodic: Any = None  # stackd.periodic jobs
    usage: Any = None  # stackd.state.usage.UsageStore
    leases: Any = None  # stackd.gpu.leases.LeaseCoordinator
    endpoints: LiveEndpoints = field(default_factory=LiveEndpoints)
    processes: Any = None  # stackd.drivers.process.LocalProcessDriver (closed at shutdown)
