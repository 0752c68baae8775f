"""What the daemon does at start, decided from the journal and what really runs.

A switch found open in the journal means the daemon died during it. The rule is simple and
never leaves a half state: if everything the target needs is already up, *finish* the switch
(re-plan the target from what runs: the plan then only binds roles, probes remotes and stops
the previous stack's leftovers); otherwise *roll back* (re-plan the previous stack from what
runs, which restarts what was stopped and stops what was started). Either way the outcome is
journalled as ``recovered`` and told in one sentence. When even that fails, the report lists
the drift that remains and ``/status`` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stackd.config.models import StacksConfig
from stackd.manager.observe import missing_members
from stackd.planner.plan import ObservedState
from stackd.state.store import JournalEntry

RecoveryAction = Literal[
    "first_start", "restored", "finished", "rolled_back", "unresolved", "default_applied"
]


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover`` did. ``str(report)`` is the sentence logged at start and shown in status."""

    action: RecoveryAction
    stack: str | None
    message: str
    switch_id: str | None = None
    drift: tuple[str, ...] = ()
    involved: tuple[str | None, ...] = ()  # both sides of the interrupted switch, while unresolved

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "stack": self.stack,
            "message": self.message,
            "switch_id": self.switch_id,
            "drift": list(self.drift),
        }


@dataclass(frozen=True)
class RecoveryDecision:
    direction: Literal["finish", "roll_back"]
    stack: str
    reason: str


def decide_recovery(config: StacksConfig, entry: JournalEntry, observed: ObservedState) -> RecoveryDecision:
    """Finish the interrupted switch when its target is complete (or there is nothing to go back
    to); otherwise go back to the stack that was active before it."""
    target, previous = entry.target_stack, entry.from_stack
    if target not in config.stacks:
        if previous in config.stacks:
            assert previous is not None
            return RecoveryDecision(
                "roll_back", previous, f"its target '{target}' is no longer in the config"
            )
        return RecoveryDecision(
            "finish",
            config.default_stack,
            f"neither '{target}' nor '{previous}' is in the config; using the default",
        )
    missing = missing_members(config, target, observed)
    if not missing:
        return RecoveryDecision("finish", target, f"every member '{target}' needs is already up")
    if previous is None or previous not in config.stacks:
        return RecoveryDecision("finish", target, "there is no earlier stack to go back to")
    return RecoveryDecision("roll_back", previous, f"'{target}' was incomplete ({'; '.join(missing)})")
