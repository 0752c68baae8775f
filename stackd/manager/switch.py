"""One switch as the manager tracks it while it runs, and as the API shows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from stackd.manager.events import EventLog, SwitchEvent, step_dict
from stackd.manager.execution import Execution, Undo
from stackd.planner.plan import Plan
from stackd.planner.views import JsonObject, SwitchAnswer, plan_json
from stackd.state.store import JournalEntry

SwitchState = Literal["pending", "running", "succeeded", "failed", "rolled_back"]
SwitchKind = Literal["switch", "recovery"]

# Journal states as the API's switch states: a recovered switch ends in whatever recovery did.
_JOURNAL_TO_STATE: dict[str, SwitchState] = {
    "intended": "running",
    "committed": "succeeded",
    "rolled_back": "rolled_back",
    "failed": "failed",
    "recovered": "succeeded",
}


@dataclass
class Switch:
    """Mutable record of one switch, owned by the manager's worker; readers get its ``view``."""

    id: str
    target: str
    from_stack: str | None
    log: EventLog
    kind: SwitchKind = "switch"
    plan: Plan | None = None
    state: SwitchState = "pending"
    execution: Execution | None = None
    error: str | None = None
    note: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def in_progress(self) -> bool:
        return self.state in ("pending", "running")

    def finish(self, state: SwitchState, error: str | None, at: float) -> None:
        self.state = state
        self.finished_at = at
        self.error = error
        if not self.log.closed:
            self.log.emit("finished", state=state, error=error, **({"note": self.note} if self.note else {}))
            self.log.close()
        self.finished.set()

    def view(self) -> SwitchAnswer:
        ex = self.execution
        failed = ex.failed_step if ex else None
        return SwitchAnswer(
            switch_id=self.id,
            kind=self.kind,
            stack=self.target,
            from_stack=self.from_stack,
            state=self.state,
            error=self.error,
            note=self.note,
            plan=plan_json(self.plan) if self.plan else None,
            steps_done=ex.steps_done_json() if ex else [],
            failed_step=step_dict(failed) if failed is not None else None,
            undone=[undo_json(u) for u in ex.undone] if ex else [],
            degraded=[{"model": m, "error": e} for m, e in sorted(ex.degraded.items())] if ex else [],
            events=[dict(event) for event in self.log.events],
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


def undo_json(undo: Undo) -> JsonObject:
    return {"step": undo.step, "ok": undo.ok, "error": undo.error}


def journal_view(entry: JournalEntry) -> SwitchAnswer:
    """A switch of an earlier daemon run, from the journal (no events: they were not persisted)."""
    return SwitchAnswer(
        switch_id=entry.switch_id,
        kind="switch",
        stack=entry.target_stack,
        from_stack=entry.from_stack,
        state=_JOURNAL_TO_STATE[entry.state],
        journal_state=entry.state,
        error=entry.error,
        note=None,
        plan=entry.plan,
        steps_done=entry.steps_done,
        failed_step=None,
        undone=entry.undone,
        degraded=[],
        events=[],
        started_at=entry.started_at,
        finished_at=entry.finished_at,
    )


async def replay_finished(entry: JournalEntry) -> AsyncIterator[SwitchEvent]:
    """The event stream of a switch that ended before this daemon started: its end only."""
    state = _JOURNAL_TO_STATE[entry.state]
    yield {
        "type": "finished",
        "switch_id": entry.switch_id,
        "seq": 0,
        "at": entry.finished_at or entry.started_at,
        "state": state,
        "error": entry.error,
    }


@dataclass(frozen=True)
class SwitchHandle:
    """What ``submit_switch`` returns: the id to follow, and a way to await the end."""

    id: str
    target: str
    plan: Plan
    dry_run: bool
    _switch: Switch | None = None

    async def wait(self) -> SwitchState | None:
        """The final state (None for a dry run, which changes nothing and ends at once)."""
        if self._switch is None:
            return None
        await self._switch.finished.wait()
        return self._switch.state

    @property
    def state(self) -> SwitchState | None:
        return self._switch.state if self._switch else None
