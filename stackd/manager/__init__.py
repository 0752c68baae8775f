"""Applying stacks: ``ModelStackManager`` and the values it hands out.

Modules: ``model_stack_manager`` (the manager, composed of the parts below), ``worker`` (the one
worker task, the switch slot, the switches kept), ``executor`` (one plan: steps, role swaps,
undo), ``journalled`` (a switch journalled around its execution), ``startup`` (recovery at start,
applied) and ``recovery`` (its decision), ``probes`` (probes, degradations, jobs, last use),
``observe``, ``status`` (``GET /status`` from a snapshot), ``switch`` (one switch and its handle),
``seams`` (``Drivers``, ``ManagerOptions``, and ``Effects``: what the rest may ask of the manager).
"""

from stackd.manager.model_stack_manager import ModelStackManager, Planner
from stackd.manager.probes import JobResult, ProbeResult
from stackd.manager.recovery import RecoveryReport
from stackd.manager.switch import SwitchHandle, SwitchState

__all__ = [
    "JobResult",
    "ModelStackManager",
    "Planner",
    "ProbeResult",
    "RecoveryReport",
    "SwitchHandle",
    "SwitchState",
]
