"""What applying a plan did (``Execution``): the steps done, the one that failed and why, what was
undone, what is degraded; and the sentences and JSON a switch answers and the history keeps.
Filled by the one executor (``stackd.manager.executor``); read by the switch, the journal and
start-up recovery."""

from __future__ import annotations

from dataclasses import dataclass, field

from stackd.errors import StackdError
from stackd.manager.events import step_dict
from stackd.manager.standing import degraded_words, rollback_words
from stackd.planner.plan import Step, describe_step
from stackd.roles import RoleTable


@dataclass(frozen=True)
class RolesSwapped:
    """A done record: the live table was replaced; undo puts ``previous`` back."""

    previous: RoleTable
    version: int


Done = Step | RolesSwapped


@dataclass(frozen=True)
class Undo:
    step: dict[str, object]
    ok: bool
    error: str | None = None


@dataclass
class Execution:
    """What applying a plan did. ``failed_step`` is None when every step succeeded; ``error``
    is what it raised (a caller such as a lease's grant raises it on as it is)."""

    done: list[Done] = field(default_factory=list)
    failed_step: Step | None = None
    error: BaseException | None = None
    undone: list[Undo] = field(default_factory=list)
    degraded: dict[str, str] = field(default_factory=dict)
    probed: dict[str, str | None] = field(default_factory=dict)  # remote -> error, None when it answered
    # member -> None when it answered, else why not: read just before the answer (``standing.py``);
    # None when nothing was probed (no health checker given).
    standing: dict[str, str | None] | None = None

    @property
    def ok(self) -> bool:
        return self.failed_step is None

    @property
    def fully_undone(self) -> bool:
        return all(u.ok for u in self.undone)

    @property
    def error_text(self) -> str | None:
        """The failure's sentence: the driver's words, or a bug's type and text."""
        return None if self.error is None else describe_error(self.error)

    def steps_done_json(self) -> list[dict[str, object]]:
        return [done_json(d) for d in self.done]

    def failure_sentence(self, previous: str | None) -> str:
        """'start_container vision (aether-vision) failed: …; undone: …; …' for people and the journal."""
        assert self.failed_step is not None
        text = f"{describe_step(step_dict(self.failed_step))} failed: {self.error_text}"
        undone = [describe_step(u.step) + ("" if u.ok else f" (undo failed: {u.error})") for u in self.undone]
        text += f"; undone: {', '.join(undone)}" if undone else "; nothing to undo"
        if self.fully_undone and previous:
            text += "; " + (
                rollback_words(previous, self.standing)
                if self.standing is not None
                else f"'{previous}' is running as before"
            )
        elif self.fully_undone:
            text += "; nothing was left changed"
        else:
            text += "; some steps could not be undone, see /status for the drift"
            text += degraded_words(self.standing or {})
        return text

    def result_json(
        self, switch_id: str, stack: str, from_stack: str | None, error: str | None = None
    ) -> dict[str, object]:
        """The switch's result as the history keeps it."""
        return {
            "switch_id": switch_id,
            "stack": stack,
            "from_stack": from_stack,
            "steps_done": self.steps_done_json(),
            "error": error,
            "undone": [{"step": u.step, "ok": u.ok, "error": u.error} for u in self.undone],
            "degraded": dict(self.degraded),
        }


def done_json(done: Done) -> dict[str, object]:
    if isinstance(done, RolesSwapped):
        return {"kind": "roles_swapped", "version": done.version}
    return step_dict(done)


def describe_error(exc: BaseException) -> str:
    """The driver's sentence; for anything else, its type too (it is a bug worth naming)."""
    if isinstance(exc, StackdError):
        return exc.message
    text = str(exc) or "no detail"
    return text if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {text}"
