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
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import replace
from typing import Any

import aiohttp

from stackd.config.live import LiveConfig, live
from stackd.config.models import StacksConfig
from stackd.config.secrets import Secrets
from stackd.drivers.base import EngineReadiness
from stackd.logs import content
from stackd.roles import LiveEndpoints, LiveRoles, RoleTable
from stackd.router import routes, skips
from stackd.router.accounting import Accounting
from stackd.router.attempt_log import AttemptLog
from stackd.router.backends import Backend, build_backend
from stackd.router.circuit import CircuitBreaker, CircuitState, Clock
from stackd.router.engines import EngineGate, Tries
from stackd.router.ledger import UsageLedger
from stackd.router.local_queue import LocalQueue, LocalQueueFull
from stackd.router.recent import RecentCalls
from stackd.router.types import (
    Answer,
    BackendError,
    ChatRequest,
    Completion,
    FailureKind,
    RouterStreamItem,
    StreamBroken,
    StreamDone,
    StreamFinish,
    TextDelta,
    Usage,
)
from stackd.state.usage import UsageStore

BackendFactory = Callable[[str, aiohttp.ClientSession], Backend | None]


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
            lambda name, session: build_backend(
                self.config, name, session, self._endpoints.get(name), self._secrets
            )
        )
        self._session: aiohttp.ClientSession | None = None
        self._backends: dict[str, tuple[str | None, Backend | None]] = {}
        self._circuits: dict[str, CircuitBreaker] = {}
        queue = self.config.reason.local_queue
        self._queue = LocalQueue(queue.size, queue.concurrency)
        self._retiring: dict[asyncio.Task[None], aiohttp.ClientSession] = {}  # sessions a reload replaced
        self._session_models: set[str] = set()  # models given a backend on the session since the last reload
        self.accounting = Accounting()
        self.recent = RecentCalls()  # the last calls and their attempts (the status page)
        self._ledger = UsageLedger(usage, clock) if usage else None

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
        - ``reason.timeouts.connect_s``: a new pooled session. The old one is closed once no call
          runs on a model that had a backend on it; at the latest after the longest a call on one
          backend may last (the old first-token and total limits), whatever runs then.
        """
        self._session_models.update(self._backends)
        self._backends.clear()
        old, new = previous.reason, config.reason
        if new.circuit != old.circuit:
            self._circuits = {name: self._rebuilt(c) for name, c in self._circuits.items()}
        if new.local_queue != old.local_queue:
            self._queue = LocalQueue(new.local_queue.size, new.local_queue.concurrency)
        if new.timeouts.connect_s != old.timeouts.connect_s and self._session is not None:
            session, self._session = self._session, None
            models, self._session_models = self._session_models, set()
            within_s = old.timeouts.first_token_s + old.timeouts.total_s + 1.0
            task = asyncio.get_running_loop().create_task(self._close_when_unused(session, models, within_s))
            self._retiring[task] = session
            task.add_done_callback(self._retiring.pop)

    def _rebuilt(self, old: CircuitBreaker) -> CircuitBreaker:
        """A breaker with the current settings and ``old``'s state (a half-open one is open)."""
        settings = self.config.reason.circuit
        circuit = CircuitBreaker(settings.failure_threshold, settings.cooldown_s, self._clock)
        circuit.consecutive_failures = old.consecutive_failures
        circuit.last_failure = old.last_failure
        circuit.open_until = old.open_until
        circuit.state = CircuitState.open if old.state is CircuitState.half_open else old.state
        return circuit

    async def _close_when_unused(
        self, session: aiohttp.ClientSession, models: set[str], within_s: float
    ) -> None:
        """Close a replaced session once no call runs on ``models`` (every model that had a
        backend on it), or after ``within_s``. A call on it holds its model's in-flight count
        until it ends; a call begun after the reload uses the new session."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        for model in sorted(models):
            await self._roles.in_flight.wait_idle(model, max(0.0, deadline - loop.time()))
        await session.close()

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
        return routes.gateway_route(self.config, self.snapshot(), model)

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
            async for _ in self._gate.settled(self.config, target):
                pass
            generation = self._gate.generation(target.model) if target.model else None
            admitted = self._admit(target, log, request)
            if admitted is None:
                continue
            backend, circuit = admitted
            start = time.perf_counter()
            try:
                with self._roles.in_flight.using(backend_model(target)):
                    completion = await self._complete_one(target, backend, request, limit_s)
            except LocalQueueFull as exc:
                circuit.abandon()
                log.skipped(target, str(exc))
                continue
            except TimeoutError:
                error = BackendError(FailureKind.timeout, f"no answer within {limit_s:g} s")
                self._failed(target, circuit, error, start, None, log)
                continue
            except BackendError as error:
                self._failed(target, circuit, error, start, None, log)
                if self._gate.may_have_died(target.model, error.kind):
                    async for _ in self._gate.settled(self.config, target, after=generation):
                        pass
                    self._again_on_a_new_engine(tries, target, generation)
                continue
            except Exception as exc:
                self._failed(target, circuit, escaped(exc, backend), start, None, log)
                continue
            except BaseException:
                circuit.abandon()
                if self._ledger is not None:  # a caller that left: what was tried is still counted
                    self._ledger.submit(log.rows())
                raise
            # a tool call is an answer without text
            if not target.allow_empty and blank(completion.text) and not completion.tool_calls:
                empty = empty_answer(backend, completion.finish_reason)
                self._empty(target, circuit, empty, start, None, log, completion.usage)
                continue
            circuit.record_success()
            ms = (time.perf_counter() - start) * 1000
            answer = log.answered(
                target,
                backend.request_model,
                completion.text,
                completion.finish_reason,
                completion.usage,
                ms,
                ms,
            )
            if completion.tool_calls:
                answer = replace(answer, tool_calls=completion.tool_calls)
            content.exchange(request.messages, answer.backend, answer.text)
            await self._commit(log)
            return answer
        await self._commit(log)
        raise log.all_failed()

    async def _complete_one(
        self, target: routes.Target, backend: Backend, request: ChatRequest, limit_s: float
    ) -> Completion:
        if target.queued:
            return await self._queued_complete(backend, request, limit_s)
        async with asyncio.timeout(limit_s):
            return await backend.complete(request)

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
                async for waiting in self._gate.settled(self.config, target):
                    yield waiting
                generation = self._gate.generation(target.model) if target.model else None
                admitted = self._admit(target, log, request)
                if admitted is None:
                    continue
                # aclosing: a caller that stops reading closes the target's stream (and its circuit
                # trial, queue slot and connection) at once, not whenever the GC finalises it.
                async with aclosing(self._stream_target(target, *admitted, request, log)) as items:
                    async for item in items:
                        if not isinstance(item, TextDelta):  # the end: in the ledger before it is sent
                            await self._commit(log)
                        yield item
                        if not isinstance(item, TextDelta):
                            return
                last = log.attempts[-1] if log.attempts else None  # nothing reached the caller
                if last and last.status == "failed" and self._gate.may_have_died(target.model, last.kind):
                    async for waiting in self._gate.settled(self.config, target, after=generation):
                        yield waiting
                    self._again_on_a_new_engine(tries, target, generation)
            await self._commit(log)
            raise log.all_failed()
        finally:
            if self._ledger is not None:  # a caller that left: what was tried is still counted
                self._ledger.submit(log.rows())

    async def _stream_target(
        self,
        target: routes.Target,
        backend: Backend,
        circuit: CircuitBreaker,
        request: ChatRequest,
        log: AttemptLog,
    ) -> AsyncGenerator[RouterStreamItem, None]:
        """One target's stream. Ends silently (no item) when it failed before any text reached
        the caller. Unless the target allows an empty answer, leading whitespace is held back
        until a visible character comes: a stream that ends blank is then ``empty`` and falls
        through like any failure, having sent nothing."""
        timeouts = self.config.reason.timeouts
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        deadline = loop.time() + min(timeouts.first_token_s, timeouts.total_s)
        first_token_ms: float | None = None
        pieces: list[str] = []
        sent = 0  # how many of ``pieces`` reached the caller
        verdict = False
        events = backend.stream(request)
        async with AsyncExitStack() as resources:
            resources.push_async_callback(close_quietly, events)
            resources.enter_context(self._roles.in_flight.using(backend_model(target)))
            try:
                if target.queued:
                    await resources.enter_async_context(self._queue.slot(timeouts.first_token_s))
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            event = await anext(events)
                    except TimeoutError:
                        what = "first token" if first_token_ms is None else "end of the answer"
                        raise BackendError(FailureKind.timeout, f"no {what} within its time limit") from None
                    except StopAsyncIteration:
                        raise BackendError(FailureKind.stream_cut, "stream ended without a finish") from None
                    except BackendError:
                        raise
                    except Exception as exc:
                        raise escaped(exc, backend) from None
                    if isinstance(event, TextDelta):
                        if first_token_ms is None:
                            first_token_ms = (time.perf_counter() - start) * 1000
                            deadline = loop.time() - first_token_ms / 1000 + timeouts.total_s
                        pieces.append(event.text)
                        if sent or target.allow_empty or not blank(event.text):
                            held, sent = pieces[sent:], len(pieces)
                            yield event if len(held) == 1 else TextDelta("".join(held))
                    elif isinstance(event, StreamFinish):
                        verdict = True
                        if not sent and not target.allow_empty and not event.tool_calls:
                            error = empty_answer(backend, event.finish_reason)
                            self._empty(target, circuit, error, start, first_token_ms, log, event.usage)
                            return
                        circuit.record_success()
                        total_ms = (time.perf_counter() - start) * 1000
                        text = "".join(pieces)
                        answer = log.answered(
                            target,
                            backend.request_model,
                            text,
                            event.finish_reason,
                            event.usage,
                            first_token_ms or total_ms,
                            total_ms,
                        )
                        if event.tool_calls:
                            answer = replace(answer, tool_calls=event.tool_calls)
                        content.exchange(request.messages, answer.backend, answer.text)
                        yield StreamDone(answer)
                        return
            except LocalQueueFull as exc:
                log.skipped(target, str(exc))
            except BackendError as error:
                verdict = True
                self._failed(target, circuit, error, start, first_token_ms, log, broken=bool(sent))
                if sent:
                    yield StreamBroken(target.strategy, backend.name, str(error), tuple(log.attempts))
            finally:
                if not verdict:
                    circuit.abandon()

    def _admit(
        self, target: routes.Target, log: AttemptLog, request: ChatRequest
    ) -> tuple[Backend, CircuitBreaker] | None:
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
                return backend, circuit
        log.skipped(target, why)
        return None

    def _failed(
        self,
        target: routes.Target,
        circuit: CircuitBreaker,
        error: BackendError,
        start: float,
        first_token_ms: float | None,
        log: AttemptLog,
        *,
        broken: bool = False,
    ) -> None:
        """The router's verdict on a failed attempt: the breaker counts it, and a timeout trips it
        at once (every further try would cost a caller the whole timeout again, while a refusal
        or a 500 costs a millisecond); then the log records the attempt."""
        circuit.record_failure(str(error), trip=error.kind is FailureKind.timeout)
        log.failed(target, error, start, first_token_ms, broken=broken)

    def _empty(
        self,
        target: routes.Target,
        circuit: CircuitBreaker,
        error: BackendError,
        start: float,
        first_token_ms: float | None,
        log: AttemptLog,
        usage: Usage,
    ) -> None:
        """An answer without text fails the attempt, but gives the breaker no verdict: the backend
        answered properly, and the request itself (a stop sequence, ``max_tokens: 1``) often
        asked for it; a caller must not be able to open a backend's circuit for everyone."""
        circuit.abandon()
        log.failed(target, error, start, first_token_ms, broken=False, usage=usage)

    def _again_on_a_new_engine(self, tries: Tries, target: routes.Target, generation: int | None) -> None:
        """After a failure the death of the target's engine explains: the same target once more
        when a new engine serves now (the caller never saw the first one fail)."""
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
            cached = self._backends[model] = (endpoint, self._factory(model, self._http()))
        return cached[1]

    def _http(self) -> aiohttp.ClientSession:
        """The one pooled session of the data path (created inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=60),
                cookie_jar=aiohttp.DummyCookieJar(),  # callers share the pool: no cookie may cross calls
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.reason.timeouts.connect_s),
            )
        return self._session

    async def start(self) -> None:
        """Nothing to start: the ledger's writer starts with the first call."""

    async def _commit(self, log: AttemptLog) -> None:
        """The call's rows into the usage ledger, committed (grouped with other calls') before
        the caller is answered: an answer the caller got is in ``usage`` after any crash."""
        if self._ledger is not None:
            await self._ledger.commit(log.rows())

    def probe_succeeded(self, model: str) -> None:
        """A periodic health probe of ``model`` passed (see ``CircuitBreaker.probe_succeeded``)."""
        circuit = self._circuits.get(model)
        if circuit is not None:
            circuit.probe_succeeded()

    def circuit_states(self) -> dict[str, CircuitState]:
        return {name: c.state for name, c in self._circuits.items()}

    def stats(self) -> dict[str, Any]:
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
        for task, session in list(self._retiring.items()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await session.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


def blank(text: str) -> bool:
    """An answer with nothing to read: no text, or whitespace only."""
    return not text or text.isspace()


def empty_answer(backend: Backend, finish_reason: str) -> BackendError:
    return BackendError(
        FailureKind.empty,
        f"{backend.name} answered no text (finish_reason {finish_reason}); "
        "allow_empty: true on the strategy or preset accepts that",
    )


def escaped(exc: Exception, backend: Backend) -> BackendError:
    """A backend broke its contract (raised something else than ``BackendError``): the call still
    fails over, as ``malformed``. The message names the type only: the exception's own text may
    hold upstream bytes that were never redacted."""
    return BackendError(
        FailureKind.malformed, f"backend {backend.name} raised {type(exc).__name__} reading the answer"
    )


async def close_quietly(events: AsyncGenerator[Any, None]) -> None:
    """Close a backend's stream; the attempt's verdict is already recorded, so a failure of the
    backend's own clean-up changes nothing the caller may see (and must not reach the server)."""
    with contextlib.suppress(Exception):
        await events.aclose()


def backend_model(target: routes.Target) -> str:
    """The model an admitted target runs on (admission skips targets without one)."""
    assert target.model is not None
    return target.model
