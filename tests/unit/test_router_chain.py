"""The chain over scripted in-memory backends: failover, attempts, circuits, streaming, the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from stackd.config.models import StacksConfig
from stackd.errors import AllStrategiesFailed
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.http_client import HttpClient
from stackd.router.types import (
    BackendError,
    ChatRequest,
    Completion,
    FailureKind,
    StreamBroken,
    StreamDone,
    StreamEvent,
    StreamFinish,
    TextDelta,
    Usage,
)
from tests.fake_clock import FakeClock

MODELS = ["m1", "m2", "m3"]
REQUEST = ChatRequest([{"role": "user", "content": "why?"}])


def priced_model(name: str) -> dict[str, Any]:
    """A GPU member of the chain's tests, reached at http://NAME/v1, priced per million tokens."""
    return {
        "runtime": "docker",
        "placement": "gpu",
        "api": "openai",
        "endpoint": f"http://{name}/v1",
        "docker": {"container": name},
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
    }


def make_config(
    first_token_s: float = 0.2, threshold: int = 3, queue: dict[str, int] | None = None
) -> StacksConfig:
    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "roles": {"orchestrator": {"required": True}},
            "models": {name: priced_model(name) for name in MODELS},
            "stacks": {"s": {"roles": {"orchestrator": "m3"}, "members": ["m1", "m2"]}},
            "reason": {
                "strategies": {
                    "one": {"models": ["m1"]},
                    "two": {"models": ["m2"]},
                    "local": {"role": "orchestrator", "queued": True},
                },
                "default_chain": ["one", "two", "local"],
                "timeouts": {"connect_s": 1, "first_token_s": first_token_s, "total_s": 5},
                "circuit": {"failure_threshold": threshold, "cooldown_s": 30},
                "local_queue": queue or {"size": 4, "concurrency": 1},
            },
        }
    )


class ScriptedBackend:
    """A backend whose behaviour a test sets: ok, refused, http500, hang, cut (after one token)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.request_model = f"served-{name}"
        self.behaviour = "ok"
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self._called: list[tuple[int, asyncio.Event]] = []

    def _count_call(self) -> None:
        self.calls += 1
        for n, event in self._called:
            if self.calls >= n:
                event.set()

    async def called(self, times: int) -> None:
        """Return once the backend has been called ``times`` times in all."""
        event = asyncio.Event()
        self._called.append((times, event))
        if self.calls >= times:
            event.set()
        await event.wait()

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def _misbehave(self) -> None:
        if self.behaviour == "refused":
            raise BackendError(FailureKind.refused, f"cannot connect to {self.name}")
        if self.behaviour == "http500":
            raise BackendError(FailureKind.http_5xx, f"HTTP 500 from {self.name}")
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        if self.gate is not None:
            await self.gate.wait()

    async def complete(self, request: ChatRequest) -> Completion:
        self._count_call()
        await self._misbehave()
        return Completion(f"answer from {self.name}", "stop", Usage(10, 20))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self._count_call()
        await self._misbehave()
        yield TextDelta(f"{self.name}:")
        if self.behaviour == "cut":
            raise BackendError(FailureKind.stream_cut, f"{self.name} dropped mid-answer")
        yield TextDelta("done")
        yield StreamFinish("stop", Usage(10, 2))


@pytest.fixture
def backends() -> dict[str, ScriptedBackend]:
    return {name: ScriptedBackend(name) for name in MODELS}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_router(
    config: StacksConfig, backends: dict[str, ScriptedBackend], clock: FakeClock, members: list[str] = MODELS
) -> ReasonRouter:
    roles = LiveRoles(RoleTable("s", {"orchestrator": "m3"}, frozenset(members)))

    def factory(name: str, session: HttpClient) -> ScriptedBackend:
        return backends[name]

    return ReasonRouter(config, roles, clock=clock, backend_factory=factory)


@pytest.fixture
async def router(backends: dict[str, ScriptedBackend], clock: FakeClock) -> AsyncIterator[ReasonRouter]:
    router = make_router(make_config(), backends, clock)
    yield router
    await router.aclose()


def summary(attempts: Any) -> list[tuple[str, str | None, str]]:
    return [(a.strategy, a.backend, a.status) for a in attempts]


@pytest.mark.parametrize("fault", ["refused", "http500", "hang"])
@pytest.mark.parametrize("position", [0, 1])
async def test_a_faulty_strategy_is_failed_over_and_the_attempts_tell_the_truth(
    backends: dict[str, ScriptedBackend], clock: FakeClock, fault: str, position: int
) -> None:
    # Strategies before `position` are out of the active stack, so the fault sits at `position`.
    router = make_router(make_config(first_token_s=0.05), backends, clock, members=MODELS[position:])
    backends[MODELS[position]].behaviour = fault
    answer = await router.reason(REQUEST)
    await router.aclose()
    answering = MODELS[position + 1]
    assert answer.backend == answering
    assert answer.text == f"answer from {answering}"
    assert answer.model == f"served-{answering}"
    expected = [("one", "m1", "skipped"), ("two", "m2", "skipped"), ("local", "m3", "answered")]
    expected[position] = (expected[position][0], expected[position][1], "failed")
    expected[position + 1] = (expected[position + 1][0], expected[position + 1][1], "answered")
    assert summary(answer.attempts) == expected[: position + 2]
    if position:
        assert answer.attempts[0].reason == "model 'm1' is not in active stack 's'"
    failed = answer.attempts[position]
    assert (
        failed.kind
        == {"refused": FailureKind.refused, "http500": FailureKind.http_5xx, "hang": FailureKind.timeout}[
            fault
        ]
    )
    assert answer.usage == Usage(10, 20)
    assert answer.cost_usd == pytest.approx((10 * 1.0 + 20 * 2.0) / 1e6)


async def test_none_healthy_raises_503_listing_every_reason(
    router: ReasonRouter, backends: dict[str, ScriptedBackend]
) -> None:
    for backend in backends.values():
        backend.behaviour = "refused"
    with pytest.raises(AllStrategiesFailed) as caught:
        await router.reason(REQUEST)
    assert caught.value.status == 503
    body = caught.value.to_dict()
    assert [a["reason"] for a in body["attempts"]] == [
        "refused: cannot connect to m1",
        "refused: cannot connect to m2",
        "refused: cannot connect to m3",
    ]
    for name in MODELS:
        assert f"cannot connect to {name}" in body["message"]


async def test_an_open_circuit_is_skipped_then_half_opens_and_closes(
    backends: dict[str, ScriptedBackend], clock: FakeClock
) -> None:
    router = make_router(make_config(threshold=2), backends, clock)
    backends["m1"].behaviour = "http500"
    for _ in range(2):
        await router.reason(REQUEST)
    answer = await router.reason(REQUEST)
    assert answer.attempts[0].status == "skipped"
    assert answer.attempts[0].reason.startswith("circuit open until ")
    assert backends["m1"].calls == 2
    backends["m1"].behaviour = "ok"
    clock.now += 31
    answer = await router.reason(REQUEST)
    assert summary(answer.attempts) == [("one", "m1", "answered")]
    assert router.stats()["circuits"]["m1"]["state"] == "closed"
    await router.aclose()


async def test_a_hanging_primary_costs_its_timeout_once_then_nothing(
    backends: dict[str, ScriptedBackend], clock: FakeClock
) -> None:
    router = make_router(make_config(first_token_s=0.05, threshold=1), backends, clock)
    backends["m1"].behaviour = "hang"
    first = await router.reason(REQUEST)
    assert first.attempts[0].elapsed_ms >= 50
    second = await router.reason(REQUEST)
    assert second.attempts[0].status == "skipped"
    assert second.attempts[1].elapsed_ms < 50
    await router.aclose()


async def test_stream_failover_before_the_first_token_is_transparent(
    router: ReasonRouter, backends: dict[str, ScriptedBackend]
) -> None:
    backends["m1"].behaviour = "http500"
    items = [item async for item in router.stream(router.gateway_route("reason"), REQUEST)]
    assert [i.text for i in items if isinstance(i, TextDelta)] == ["m2:", "done"]
    done = items[-1]
    assert isinstance(done, StreamDone)
    assert done.answer.text == "m2:done"
    assert summary(done.answer.attempts) == [("one", "m1", "failed"), ("two", "m2", "answered")]


async def test_stream_failure_after_the_first_token_ends_with_an_error_naming_the_backend(
    router: ReasonRouter, backends: dict[str, ScriptedBackend]
) -> None:
    backends["m1"].behaviour = "cut"
    items = [item async for item in router.stream(router.gateway_route("reason"), REQUEST)]
    assert items[0] == TextDelta("m1:")
    broken = items[-1]
    assert isinstance(broken, StreamBroken)
    assert broken.backend == "m1"
    assert "stream_cut" in broken.reason
    assert summary(broken.attempts) == [("one", "m1", "failed")]
    assert backends["m2"].calls == 0  # never retried once text reached the caller


async def test_stream_with_nothing_healthy_raises_before_yielding(
    router: ReasonRouter, backends: dict[str, ScriptedBackend]
) -> None:
    for backend in backends.values():
        backend.behaviour = "refused"
    with pytest.raises(AllStrategiesFailed):
        await anext(router.stream(router.gateway_route("reason"), REQUEST))


async def test_the_local_queue_refuses_at_once_when_full(
    backends: dict[str, ScriptedBackend], clock: FakeClock
) -> None:
    router = make_router(make_config(queue={"size": 1, "concurrency": 1}), backends, clock)
    backends["m1"].behaviour = backends["m2"].behaviour = "refused"
    backends["m3"].gate = asyncio.Event()
    running = asyncio.create_task(router.reason(REQUEST))
    await backends["m3"].called(1)  # holds the one slot, parked at the gate
    waiting = asyncio.create_task(router.reason(REQUEST))
    # m2 refuses it at once; from there it runs without a pause into the queue, and waits there
    await backends["m2"].called(2)
    with pytest.raises(AllStrategiesFailed) as caught:
        await router.reason(REQUEST)
    assert caught.value.to_dict()["attempts"][-1]["reason"].startswith("local queue full")
    backends["m3"].gate.set()
    assert (await running).backend == (await waiting).backend == "m3"
    await router.aclose()


async def test_accounting_counts_requests_failures_tokens_and_cost(
    router: ReasonRouter, backends: dict[str, ScriptedBackend]
) -> None:
    backends["m1"].behaviour = "http500"
    await router.reason(REQUEST)
    await router.reason(REQUEST)
    rows = {(r["strategy"], r["backend"]): r for r in router.stats()["strategies"]}
    assert rows[("one", "m1")]["requests"] == 2
    assert rows[("one", "m1")]["failures"] == {"http_5xx": 2}
    assert rows[("two", "m2")]["answered"] == 2
    assert rows[("two", "m2")]["completion_tokens"] == 40
    assert rows[("two", "m2")]["cost_usd"] == pytest.approx(2 * 50 / 1e6)
