"""What the router asks of a process member's engine: wait while it restarts, and say why not.

The process driver owns each engine's state (``EngineReadiness``); this module only asks it, so
that a restart stays invisible to callers within ``process.restart_wait_s``:

- before a target is tried, a call waits while its engine restarts (``settled``), yielding an
  ``EngineWaiting`` every few seconds (a stream's loading indication); then it is admitted, or
  skipped with what is happening ("engine X killed by SIGKILL, restart 1/3 in progress; not ready
  within 30 s"), never with the empty endpoint of an engine that is gone;
- a call that failed to connect or was cut (``refused``, ``stream_cut``) while nothing reached
  its caller asks whether its engine died under it: it then waits for the restart and tries the
  same target once more, on the new engine (``Tries.again``);
- a new engine (a new ``generation``) starts with a closed circuit: the failures that opened it
  were the dead engine's (``renewed``); a call that finds that circuit open before the driver has
  handled the exit waits with ``settled(after=generation)`` as well (``ReasonRouter._maybe_died``).

Models that are not process members (docker, ollama, remote) are never waited for: the driver
knows no engine of theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator

from stackd.config.models import Runtime, StacksConfig
from stackd.drivers.base import EngineReadiness, EngineStatus
from stackd.router import skips
from stackd.router.routes import Target
from stackd.router.types import EngineWaiting, FailureKind

WAITING_EVERY_S = 5.0  # a stream's client hears from a wait this often
NOTICE_S = 1.0  # after a failure: how long an exit the supervisor has not handled yet is awaited
ENGINE_DIED = frozenset({FailureKind.refused, FailureKind.stream_cut})  # what a killed engine causes


class EngineGate:
    def __init__(self, engines: EngineReadiness | None) -> None:
        """``engines``: the process driver; None (tests, no process members) waits for nothing."""
        self._engines = engines
        self._generations: dict[str, int] = {}

    def status(self, model: str) -> EngineStatus | None:
        return None if self._engines is None else self._engines.engine_status(model)

    def generation(self, model: str) -> int | None:
        status = self.status(model)
        return None if status is None else status.generation

    def renewed(self, model: str) -> bool:
        """True the first time a new engine of ``model`` is seen (not the first one): its
        circuit is to start closed."""
        generation = self.generation(model)
        if generation is None:
            return False
        seen = self._generations.get(model)
        self._generations[model] = generation
        return seen is not None and seen != generation

    def refusal(self, config: StacksConfig, model: str) -> str | None:
        """Why ``model`` cannot be called now (its engine is down, or still restarting after the
        wait), else None. No I/O."""
        if self._engines is None:
            return None
        status = self._engines.engine_status(model)
        if status is None:
            spec = config.models.get(model)
            return skips.engine_not_started(model) if spec and spec.runtime == Runtime.process else None
        if status.phase == "waiting":
            return skips.engine_not_ready(status.reason, restart_wait_s(config, model))
        if status.phase == "down":
            return skips.engine_down(status.reason)
        return None

    def may_have_died(self, model: str | None, kind: FailureKind | None) -> bool:
        """A failure its engine's death would cause, on a model that has an engine."""
        return model is not None and kind in ENGINE_DIED and self.status(model) is not None

    def must_wait(self, target: Target, after: int | None = None) -> bool:
        """Whether ``settled`` has anything to wait for (no I/O): a call whose engine serves, or
        that has none, does not create the async generator (nor pay its event-loop hooks)."""
        engines, model = self._engines, target.model
        if engines is None or model is None or target.skip is not None:
            return False
        status = engines.engine_status(model)
        if status is None or status.phase == "down":
            return False
        return not (status.phase == "serving" and (after is None or status.generation != after))

    async def settled(
        self, config: StacksConfig, target: Target, after: int | None = None
    ) -> AsyncIterator[EngineWaiting]:
        """Wait while the target's engine starts or restarts, at most its ``restart_wait_s``,
        yielding an ``EngineWaiting`` every ``WAITING_EVERY_S``. ``after``: the generation a call
        just failed on; the wait then also covers an exit the driver has not handled yet."""
        engines, model = self._engines, target.model
        if engines is None or model is None or not self.must_wait(target, after):
            return
        status = engines.engine_status(model)
        if status is None:  # gone between the two looks: nothing to wait for
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + restart_wait_s(config, model)
        if status.phase == "serving":  # the engine a call failed on: did it die?
            status = await engines.wait_serving(model, max(0.0, min(NOTICE_S, deadline - loop.time())))
        while status is not None and status.phase == "waiting":
            left = deadline - loop.time()
            if left <= 0:
                return
            yield EngineWaiting(target.strategy, model, status.reason, left)
            status = await engines.wait_serving(model, min(left, WAITING_EVERY_S))


def restart_wait_s(config: StacksConfig, model: str) -> float:
    spec = config.models.get(model)
    return spec.process.restart_wait_s if spec is not None and spec.process is not None else 0.0


class Tries:
    """A route's targets in order; ``again(target)`` tries the one just tried once more, next."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self._pending = list(targets)
        self._repeated: set[int] = set()

    def __iter__(self) -> Iterator[Target]:
        while self._pending:
            yield self._pending.pop(0)

    def again(self, target: Target) -> bool:
        """Queue ``target`` first, once per call; False when it was repeated already."""
        if id(target) in self._repeated:
            return False
        self._repeated.add(id(target))
        self._pending.insert(0, target)
        return True
