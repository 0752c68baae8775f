"""The ReasonRouter: executes a route (the reason() chain, a preset, a role) over its backends.

For each target in order: skip it with a reason when the route says so, when its backend is not
ready (no API key), when its circuit is open, or when the local queue is full; otherwise call
it under the connect / first-token / total limits. A failure moves on to the next target only
while nothing has reached the caller; once a streamed token has been handed out, a failure
ends the stream with ``StreamBroken`` naming the backend. Every target leaves one ``Attempt``.
An answer without text (blank or whitespace only) is a failure of kind ``empty`` that moves on
like any other, unless the strategy or preset sets ``allow_empty``.

One ``RoleTable`` snapshot is taken per call, so a stack switch never changes a call midway.
Timing: a non-streaming call's answer is its first token, so it is bounded by
``min(first_token_s, total_s)``; a stream must produce its first text within ``first_token_s``
and finish within ``total_s``. Time spent waiting for a local queue slot counts too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import TypedDict

from stackd.config.live import LiveConfig, live
from stackd.config.models import StacksConfig
from stackd.config.secrets import Secrets
from stackd.drivers.base import EngineReadiness
from stackd.roles import LiveEndpoints, LiveRoles, RoleTable
from stackd.router import routes, skips
from stackd.router.accounting import Accounting, StrategyRow
from stackd.router.attempt_log import AttemptLog
from stackd.router.backends import Backend, build_backend
from stackd.router.circuit import CircuitBreaker, CircuitState, Clock
from stackd.router.deadline import Deadline
from stackd.router.engines import EngineGate, Tries
from stackd.router.http_client import HttpClient
from stackd.router.http_pool import HttpPool
from stackd.router.ledger import UsageLedger
from stackd.router.local_queue import LocalQueue, LocalQueueFull
from stackd.router.recent import RecentCalls
from stackd.router.target_stream import stream_target
from stackd.router.types import (
    Answer,
    BackendError,
    ChatRequest,
    Completion,
    EngineWaiting,
    FailureKind,
    RouterStreamItem,
    TextDelta,
)
from stackd.router.verdicts import Admitted, escaped, failed, finished
from stackd.state.usage import UsageStore

MAX_CACHED_ROUTES = 1024  # names are the callers' (reason:effort=N, preset:slice): bounded
BackendFactory = Callable[[str, HttpClient], Backend | None]


class RouterStats(TypedDict):
    """The router's part of ``/status``."""

    stack: str | None
    strategies: list[StrategyRow]
    circuits: dict[str, dict[str, object]]
    local_queue: dict[str, int]


class ReasonRouter:
    def __init__(
        self,
        config: StacksConfig | LiveConfig,
        live_roles: LiveRoles,
        usage: UsageStore | None = None,
        clock: Clock = time.time,
        *,
        on_use: Callable[[str], None] | None = None,
        backend_factory: BackendFactory | None = None,
        endpoints: LiveEndpoints | None = None,
        unavailable: Callable[[str], str | None] | None = None,
        engines: EngineReadiness | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        """``usage`` receives each call's rows before the call is answered (``UsageLedger``: group
        commit); ``on_use(model)`` is
        called as each attempt starts (the manager keeps on-demand models alive with it);
        ``backend_factory`` replaces the protocol backends (tests); ``endpoints`` says where
        process members answer now (a backend is rebuilt when its member's port changes).
        ``config``: the daemon's ``LiveConfig`` (the manager swaps it; the router follows each
        swap), or a config of its own. ``secrets``: where the remote members' keys are read
        (the daemon's environment when None)."""
        self.live_config = live(config)
        self.live_config.on_swap(self._adopt)
        self._roles = live_roles
        self._secrets = secrets or Secrets.environment()
        self._endpoints = endpoints or LiveEndpoints()
        # Why a model must be skipped now (a swarm member whose node is down), else None.
        self._unavailable = unavailable or (lambda model: None)
        # Process members' engines: a call waits while one restarts (stackd/router/engines.py).
        self._gate = EngineGate(engines)
        self._usage = usage
        self._on_use = on_use
        self._clock = clock
        self._factory = backend_factory or (
            lambda name, client: build_backend(
                self.config, name, client, self._endpoints.get(name), self._secrets
            )
        )
        self._pool = HttpPool(live_roles.in_flight)
        self._backends: dict[str, tuple[str | None, Backend | None]] = {}
        self._circuits: dict[str, CircuitBreaker] = {}
        queue = self.config.reason.local_queue
        self._queue = LocalQueue(queue.size, queue.concurrency)
        self.accounting = Accounting()
        self.recent = RecentCalls()  # the last calls and their attempts (the status page)
        self._ledger = UsageLedger(usage, clock) if usage else None
        # gateway model name -> its route, for the (config, role table) they were resolved on:
        # a route is a pure function of the two, and both are swapped whole, never mutated.
        self._gateway_routes: dict[str, routes.Route] = {}
        self._routes_of: tuple[StacksConfig, RoleTable] | None = None

    @property
    def config(self) -> StacksConfig:
        """The config the router runs now (``live_config.current``)."""
        return self.live_config.current

    def replace_config(self, config: StacksConfig) -> None:
        """Swap the router's live config (in the daemon the manager's worker does, for both)."""
        self.live_config.swap(config)

    def _adopt(self, previous: StacksConfig, config: StacksConfig) -> None:
        """Follow a swap of the live config, and rebuild what it changes, cutting no call in flight.

        Backends are rebuilt lazily from the new config (endpoints may change). A call in flight
        keeps what it took: its backend, its breaker, its queue slot, its connection.

        - ``reason.circuit``: every breaker takes the new threshold and cool-down, and keeps its
          state (an open circuit stays open until its cool-down ends); a half-open trial still in
          flight reports to the breaker it came from, so the new one is open, its trial slot free.
        - ``reason.local_queue``: a new queue. Calls that hold or wait for a slot of the old one
          keep it: until they end, up to the old and the new concurrency may run at once.
        - ``reason.timeouts.connect_s``: a new pooled client. The old one is closed once no call
          runs on a model that had a backend on it; at the latest after the longest a call on one
          backend may last (the old first-token and total limits), whatever runs then.
        """
        self._pool.used_by(self._backends)
        self._backends.clear()
        old, new = previous.reason, config.reason
        if new.circuit != old.circuit:
            settings = new.circuit
            self._circuits = {
                name: c.resettled(settings.failure_threshold, settings.cooldown_s)
                for name, c in self._circuits.items()
            }
        if new.local_queue != old.local_queue:
            self._queue = LocalQueue(new.local_queue.size, new.local_queue.concurrency)
        if new.timeouts.connect_s != old.timeouts.connect_s:
            self._pool.retire(within_s=old.timeouts.first_token_s + old.timeouts.total_s + 1.0)

    # ---------------------------------------------------------------- public calls
    def snapshot(self) -> RoleTable:
        return self._roles.current

    async def reason(self, request: ChatRequest, effort: int = routes.DEFAULT_EFFORT) -> Answer:
        return await self.complete(routes.reason_route(self.config, self.snapshot(), effort), request)

    async def deep_reasoning(self, request: ChatRequest) -> Answer:
        return await self.complete(routes.deep_reasoning_route(self.config, self.snapshot()), request)

    async def invoke_model(self, preset: str, request: ChatRequest, slice_name: str | None = None) -> Answer:
        return await self.complete(
            routes.preset_route(self.config, self.snapshot(), preset, slice_name), request
        )

    def reason_route(self, effort: int = routes.DEFAULT_EFFORT) -> routes.Route:
        return routes.reason_route(self.config, self.snapshot(), effort)

    def deep_reasoning_route(self) -> routes.Route:
        return routes.deep_reasoning_route(self.config, self.snapshot())

    def preset_route(self, preset: str, slice_name: str | None = None) -> routes.Route:
        return routes.preset_route(self.config, self.snapshot(), preset, slice_name)

    def gateway_route(self, model: str) -> routes.Route:
        """The route of a gateway ``model`` name, resolved once per (config, role table)."""
        config, table = self.config, self.snapshot()
        known = self._routes_of
        if known is None or known[0] is not config or known[1] is not table:
            self._gateway_routes = {}
            self._routes_of = (config, table)
        route = self._gateway_routes.get(model)
        if route is None:
            route = routes.gateway_route(config, table, model)  # an unknown name raises: not kept
            if len(self._gateway_routes) < MAX_CACHED_ROUTES:
                self._gateway_routes[model] = route
        return route

    def gateway_models(self) -> list[str]:
        return routes.gateway_model_names(self.config, self.snapshot())

    # ---------------------------------------------------------------- execution
    async def complete(self, route: routes.Route, request: ChatRequest) -> Answer:
        """Try the route's targets in order; the first answer wins. Raises ``AllStrategiesFailed``."""
        log = AttemptLog(route, self.config, self.accounting, self.recent)
        timeouts = self.config.reason.timeouts
        limit_s = min(timeouts.first_token_s, timeouts.total_s)
        tries = Tries(route.targets)
        for target in tries:
            died = self._maybe_died(target)
            if died is not None or self._gate.must_wait(target):
                async for _ in self._gate.settled(self.config, target, died):
                    pass
            generation = self._gate.generation(target.model) if target.model else None
            attempt = self._admit(target, log, request)
            if attempt is None:
                continue
            answer = await self._complete_attempt(attempt, request, limit_s)
            if answer is not None:
                self._commit(log)
                return answer
            async for _ in self._again_on_a_new_engine(tries, target, generation, log):
                pass
        self._commit(log)
        raise log.all_failed()

    async def _complete_attempt(
        self, attempt: Admitted, request: ChatRequest, limit_s: float
    ) -> Answer | None:
        """One admitted target's whole answer and its verdict; None when it failed or was skipped."""
        in_flight = self._roles.in_flight
        in_flight.begin(attempt.model)  # begin/end, not ``using``: this runs on every call
        try:
            if attempt.target.queued:
                completion = await self._queued_complete(attempt.backend, request, limit_s)
            else:
                with Deadline(limit_s):
                    completion = await attempt.backend.complete(request)
        except LocalQueueFull as exc:
            attempt.circuit.abandon()
            attempt.log.skipped(attempt.target, str(exc))
            return None
        except TimeoutError:
            failed(attempt, BackendError(FailureKind.timeout, f"no answer within {limit_s:g} s"), None)
            return None
        except BackendError as error:
            failed(attempt, error, None)
            return None
        except Exception as exc:
            failed(attempt, escaped(exc, attempt.backend), None)
            return None
        except BaseException:
            attempt.circuit.abandon()
            if self._ledger is not None:  # a caller that left: what was tried is still counted
                self._ledger.record(attempt.log.rows())
            raise
        finally:
            in_flight.end(attempt.model)
        return finished(attempt, completion, None, request)

    async def _queued_complete(self, backend: Backend, request: ChatRequest, limit_s: float) -> Completion:
        deadline = asyncio.get_running_loop().time() + limit_s
        async with self._queue.slot(limit_s), asyncio.timeout_at(deadline):
            return await backend.complete(request)

    async def stream(
        self, route: routes.Route, request: ChatRequest
    ) -> AsyncGenerator[RouterStreamItem, None]:
        """Text deltas, then ``StreamDone`` or ``StreamBroken``. Raises ``AllStrategiesFailed``
        when no target produced a first token, having yielded nothing but ``EngineWaiting``
        items (the call waited for a restarting engine)."""
        log = AttemptLog(route, self.config, self.accounting, self.recent)
        try:
            tries = Tries(route.targets)
            for target in tries:
                died = self._maybe_died(target)
                if died is not None or self._gate.must_wait(target):
                    async for waiting in self._gate.settled(self.config, target, died):
                        yield waiting
                generation = self._gate.generation(target.model) if target.model else None
                attempt = self._admit(target, log, request)
                if attempt is None:
                    continue
                timeouts, in_flight = self.config.reason.timeouts, self._roles.in_flight
                # aclosing: a caller that stops reading closes the target's stream (and its circuit
                # trial, queue slot and connection) at once, not whenever the GC finalises it.
                async with aclosing(
                    stream_target(attempt, request, timeouts, self._queue, in_flight)
                ) as items:
                    async for item in items:
                        if not isinstance(item, TextDelta):  # the end: in the ledger before it is sent
                            self._commit(log)
                        yield item
                        if not isinstance(item, TextDelta):
                            return
                # nothing reached the caller
                async for waiting in self._again_on_a_new_engine(tries, target, generation, log):
                    yield waiting
            self._commit(log)
            raise log.all_failed()
        finally:
            if self._ledger is not None:  # a caller that left: what was tried is still counted
                self._ledger.record(log.rows())

    def _maybe_died(self, target: routes.Target) -> int | None:
        """The generation of the target's engine when its circuit is not closed: the failures that
        opened it may be the engine's death that its driver has not handled yet (a moment after a
        kill, longer on a loaded machine). ``settled`` then waits for the driver and the restart
        (at once past an engine that lives) instead of the call skipping the target for its open
        circuit. None for most calls (a closed circuit: one dict lookup) and for models without an
        engine."""
        if target.model is None:
            return None
        circuit = self._circuits.get(target.model)
        if circuit is None or circuit.state is CircuitState.closed:
            return None
        return self._gate.generation(target.model)

    def _admit(self, target: routes.Target, log: AttemptLog, request: ChatRequest) -> Admitted | None:
        """The backend and its circuit when the target may be tried now; else records the skip."""
        if target.skip is not None or target.model is None:
            log.skipped(target, target.skip or skips.NO_MODEL)
            return None
        engine_down = self._gate.refusal(self.config, target.model)
        if engine_down is not None:  # before the backend: a dead engine has no endpoint
            log.skipped(target, engine_down)
            return None
        if self._gate.renewed(target.model):  # the failures that opened it were the dead engine's
            self._circuits.pop(target.model, None)
        try:
            backend = self._backend(target.model)
        except Exception as exc:  # a backend that cannot be built is this target's skip, not a 500
            log.skipped(target, skips.backend_unbuildable(target.model, exc))
            return None
        if backend is None:
            log.skipped(target, skips.no_chat_protocol(target.model))
            return None
        cannot = backend.unsupported(request)
        if cannot is not None:  # a property of the request, not of the backend's health: no circuit
            log.skipped(target, skips.output_unsupported(cannot), unsupported=True)
            return None
        why = backend.not_ready() or skips.unavailable(self._unavailable(target.model))
        if why is None:
            circuit = self.circuit(target.model)
            why = circuit.admit()
            if why is None:
                if self._on_use is not None:
                    self._on_use(target.model)
                return Admitted(target, backend, circuit, log, time.perf_counter())
        log.skipped(target, why)
        return None

    async def _again_on_a_new_engine(
        self, tries: Tries, target: routes.Target, generation: int | None, log: AttemptLog
    ) -> AsyncGenerator[EngineWaiting, None]:
        """After a failure the death of the target's engine explains (and nothing reached the
        caller): wait while it restarts, then the same target once more when a new engine serves
        now (the caller never saw the first one fail)."""
        last = log.attempts[-1] if log.attempts else None
        if last is None or last.status != "failed" or not self._gate.may_have_died(target.model, last.kind):
            return
        async for waiting in self._gate.settled(self.config, target, after=generation):
            yield waiting
        if target.model is None or generation is None:
            return
        status = self._gate.status(target.model)
        if status is not None and status.phase == "serving" and status.generation != generation:
            tries.again(target)

    # ---------------------------------------------------------------- resources
    def circuit(self, model: str) -> CircuitBreaker:
        circuit = self._circuits.get(model)
        if circuit is None:
            settings = self.config.reason.circuit
            circuit = CircuitBreaker(settings.failure_threshold, settings.cooldown_s, self._clock)
            self._circuits[model] = circuit
        return circuit

    def _backend(self, model: str) -> Backend | None:
        endpoint = self._endpoints.get(model)
        cached = self._backends.get(model)
        if cached is None or cached[0] != endpoint:
            cached = self._backends[model] = (
                endpoint,
                self._factory(model, self._pool.client(self.config.reason.timeouts.connect_s)),
            )
        return cached[1]

    async def start(self) -> None:
        """Nothing to start: the ledger's writer starts with the first call."""

    def _commit(self, log: AttemptLog) -> None:
        """The call's rows into the usage ledger's journal before the caller is answered: an
        answer the caller got is in ``usage`` after any crash (``UsageLedger``)."""
        if self._ledger is not None:
            self._ledger.record(log.rows())

    def probe_succeeded(self, model: str) -> None:
        """A periodic health probe of ``model`` passed (see ``CircuitBreaker.probe_succeeded``)."""
        circuit = self._circuits.get(model)
        if circuit is not None:
            circuit.probe_succeeded()

    def circuit_states(self) -> dict[str, CircuitState]:
        return {name: c.state for name, c in self._circuits.items()}

    def stats(self) -> RouterStats:
        """The router's part of ``/status``: accounting, circuits, local queue."""
        return {
            "stack": self.snapshot().stack,
            "strategies": self.accounting.stats(),
            "circuits": {name: c.to_dict() for name, c in sorted(self._circuits.items())},
            "local_queue": self._queue.to_dict(),
        }

    async def aclose(self) -> None:
        """Write the ledger's waiting rows, close the HTTP pools. Idempotent."""
        if self._ledger is not None:
            await self._ledger.aclose()
        await self._pool.aclose()
