"""Applying stacks: ``ModelStackManager`` and the values it hands out.

Modules: ``core`` (observation, planning, the one switch slot and the worker task),
``executor`` (one plan: steps, role swaps, undo), ``model_stack_manager`` (switch lifecycle,
recovery, periodic hooks), ``recovery`` (the decision at start), ``observe``, ``status``,
``switch`` (the record of one switch and its handle).
"""

from stackd.manager.core import JobResult, Planner, ProbeResult
from stackd.manager.model_stack_manager import ModelStackManager
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
