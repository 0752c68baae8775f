"""What a switch reports while it runs, and the log that replays it to late followers.

A ``SwitchEvent`` is a plain JSON-able dict (the API writes it as one SSE message, ``event:`` set
to its ``type``). ``EventLog.emit(type, **fields)`` is the only place that builds one (the
executor and the manager call it); ``EventType`` and ``SwitchEvent`` below are the types and
their fields, listed here:

    step_started   step                           a step begins
    step_done      step                           a step succeeded
    step_failed    step, error                    a step failed; undo follows
    pull_progress  step, tag, status, digest, completed, total    one (throttled) pull line
    undo_step      step, ok, error                one compensation of a done step
    degraded       model, error                   a non-required remote did not answer
    roles_swapped  version, bindings              the live role table was replaced
    draining       model, in_flight[, timed_out]  waiting for requests on a model about to stop
    finished       state, error                   last event of every switch

Every event also carries ``switch_id``, ``seq`` (0, 1, 2 … per switch) and ``at`` (wall clock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict
from typing import Literal, NotRequired, TypedDict

# re-exported: readers of events phrase their steps with it
from stackd.planner.plan import Step
from stackd.planner.plan import describe_step as describe_step

log = logging.getLogger("stackd.switch")

EventType = Literal[
    "step_started",
    "step_done",
    "step_failed",
    "pull_progress",
    "undo_step",
    "degraded",
    "roles_swapped",
    "draining",
    "finished",
]


class SwitchEvent(TypedDict):
    type: EventType
    switch_id: str
    seq: int
    at: float
    step: NotRequired[dict[str, object]]
    error: NotRequired[str | None]
    ok: NotRequired[bool]
    tag: NotRequired[str]
    status: NotRequired[str]
    digest: NotRequired[str | None]
    completed: NotRequired[int | None]
    total: NotRequired[int | None]
    model: NotRequired[str]
    state: NotRequired[str]
    version: NotRequired[int]
    bindings: NotRequired[dict[str, str]]
    in_flight: NotRequired[int]
    timed_out: NotRequired[bool]


class EventLog:
    """The events of one switch: append-only, replayed from the start to every follower.

    Followers (``follow``) get every past event, then each new one as it is appended, and stop
    after ``close``. Everything runs on the event loop: appends never block and never wait for
    slow followers (each follower keeps its own position in the list).
    """

    def __init__(
        self, switch_id: str, wall_clock: Callable[[], float] = time.time, subject: str | None = None
    ) -> None:
        """``subject``: what the switch does (``'to stack X from Y (kind)'``), for its first log line."""
        self.switch_id = switch_id
        self._wall_clock = wall_clock
        self._events: list[SwitchEvent] = []
        self._closed = False
        self._changed = asyncio.Event()
        self._began = wall_clock()
        self._step_began: dict[str, float] = {}
        if subject is not None:
            log.info("switch %s started: %s", switch_id, subject, extra={"switch_id": switch_id})

    @property
    def events(self) -> list[SwitchEvent]:
        return list(self._events)

    @property
    def closed(self) -> bool:
        return self._closed

    def emit(self, type_: EventType, **fields: object) -> SwitchEvent:
        if self._closed:
            raise RuntimeError(f"switch {self.switch_id}: event '{type_}' after the log was closed")
        event: SwitchEvent = {
            "type": type_,
            "switch_id": self.switch_id,
            "seq": len(self._events),
            "at": self._wall_clock(),
        }
        event.update(fields)  # type: ignore[typeddict-item]
        self._events.append(event)
        self._log(event)
        self._wake()
        return event

    def _log(self, event: SwitchEvent) -> None:
        """The switch's story in the daemon's log: one line per step as it ends, with its
        duration, and one at the outcome; each carries ``switch_id``."""
        kind, at, extra = event["type"], event["at"], {"switch_id": self.switch_id}
        step = event.get("step")
        said = describe_step(step) if step else ""
        if kind == "step_started":
            self._step_began[said] = at
        elif kind in ("step_done", "step_failed"):
            took = at - self._step_began.pop(said, at)
            if kind == "step_done":
                log.info("switch %s: %s (%.2f s)", self.switch_id, said, took, extra=extra)
            else:
                error = event.get("error")
                log.warning(
                    "switch %s: %s failed (%.2f s): %s", self.switch_id, said, took, error, extra=extra
                )
        elif kind == "undo_step":
            log.info("switch %s: undo %s (ok=%s)", self.switch_id, said, event.get("ok"), extra=extra)
        elif kind == "degraded":
            log.warning(
                "switch %s: %s degraded: %s",
                self.switch_id,
                event.get("model"),
                event.get("error"),
                extra=extra,
            )
        elif kind == "finished":
            state, error = event.get("state"), event.get("error")
            level = logging.INFO if state == "succeeded" else logging.WARNING
            tail = f": {error}" if error else ""
            log.log(
                level, "switch %s %s in %.2f s%s", self.switch_id, state, at - self._began, tail, extra=extra
            )

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        # Each wait gets a fresh Event: setting the old one releases every follower parked on it.
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self) -> AsyncIterator[SwitchEvent]:
        position = 0
        while True:
            changed = self._changed
            while position < len(self._events):
                yield self._events[position]
                position += 1
            if self._closed:
                return
            await changed.wait()


class PullThrottle:
    """Decides which pull lines become events: Ollama streams thousands per layer; a follower
    needs a new status, each whole percent, and the last line."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str | None], tuple[str, int]] = {}

    def wanted(
        self, tag: str, status: str, digest: str | None, completed: int | None, total: int | None
    ) -> bool:
        key = (tag, digest)
        percent = (100 * completed) // total if completed is not None and total else -1
        last = self._last.get(key)
        if last == (status, percent) and completed != total:
            return False
        self._last[key] = (status, percent)
        return True


def step_dict(step: Step) -> dict[str, object]:
    """A step (frozen dataclass of ``stackd.planner.plan``) as the JSON the journal and the API carry."""
    return asdict(step)


def bindings_dict(bindings: Mapping[str, str]) -> dict[str, str]:
    return dict(sorted(bindings.items()))
