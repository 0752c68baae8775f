"""The planner: ``plan_switch(config, observed, target, hardware) -> Plan`` (``planner/switch.py``).

Pure: no I/O, no clock, no logging, no globals. Given the same inputs it returns the same plan,
so hypothesis can check its invariants without Docker (tests/property/test_planner_properties.py).

The package's names are loaded on first use (PEP 562): ``stackd.planner.plan`` (the plan's
values, which the CLI and the API's answer shapes read) must not pay for the config models and
every ledger, which ``plan_switch`` needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stackd.planner.members import ORCHESTRATOR
    from stackd.planner.simulate import bindings_after_each_step, simulate_vram
    from stackd.planner.switch import plan_switch

__all__ = ["ORCHESTRATOR", "bindings_after_each_step", "plan_switch", "simulate_vram"]

_HOMES = {
    "ORCHESTRATOR": "stackd.planner.members",
    "bindings_after_each_step": "stackd.planner.simulate",
    "simulate_vram": "stackd.planner.simulate",
    "plan_switch": "stackd.planner.switch",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'stackd.planner' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
