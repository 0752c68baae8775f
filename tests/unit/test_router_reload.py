"""A reload changes everything it says: ``reason.circuit``, ``reason.local_queue`` and
``reason.timeouts.connect_s`` take effect for the next call, and no call in flight is cut."""

from __future__ import annotations

import asyncio
from typing import Any

from stackd.config.models import StacksConfig
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.backends import Backend, build_backend
from stackd.router.circuit import CircuitState
from stackd.router.http_client import HttpClient
from stackd.router.types import ChatRequest, StreamDone, TextDelta
from stackd.sim.control import SimControl
from stackd.sim.openai import OpenAISim
from tests.fake_clock import FakeClock
from tests.unit.test_router_chain import REQUEST, ScriptedBackend, make_config, make_router


def with_reason(config: StacksConfig, **sections: dict[str, Any]) -> StacksConfig:
    """``config`` with the given ``reason`` sections replaced (as a reloaded file would have them)."""
    reason = config.reason.model_dump()
    for key, value in sections.items():
        reason[key] = {**reason[key], **value}
    return StacksConfig.model_validate({**config.model_dump(), "reason": reason})


# ---------------------------------------------------------------- reason.circuit
async def test_a_new_threshold_applies_to_a_breaker_and_keeps_its_count() -> None:
    backends = {name: ScriptedBackend(name) for name in ("m1", "m2", "m3")}
    clock = FakeClock()
    config = make_config(threshold=3)
    router = make_router(config, backends, clock)
    backends["m1"].behaviour = "refused"
    for _ in range(2):
        await router.reason(REQUEST)
    router.replace_config(with_reason(config, circuit={"failure_threshold": 5}))
    assert router.circuit("m1").consecutive_failures == 2
    for _ in range(2):
        await router.reason(REQUEST)
    assert router.circuit("m1").state is CircuitState.closed  # 4 of 5 (the old threshold was 3)
    await router.reason(REQUEST)
    assert router.circuit("m1").state is CircuitState.open
    await router.aclose()


async def test_an_open_circuit_stays_open_and_the_new_cooldown_applies_to_the_next_opening() -> None:
    backends = {name: ScriptedBackend(name) for name in ("m1", "m2", "m3")}
    clock = FakeClock()
    config = make_config(threshold=1)
    router = make_router(config, backends, clock)
    backends["m1"].behaviour = "refused"
    await router.reason(REQUEST)
    router.replace_config(with_reason(config, circuit={"failure_threshold": 1, "cooldown_s": 1}))
    assert router.circuit("m1").state is CircuitState.open
    answer = await router.reason(REQUEST)
    assert answer.attempts[0].status == "skipped" and "circuit open" in answer.attempts[0].reason
    clock.now += 31  # the cool-down it opened with (30 s) ends: the half-open trial fails, reopens
    await router.reason(REQUEST)
    clock.now += 1.5  # the new cool-down, 1 s
    backends["m1"].behaviour = "ok"
    assert (await router.reason(REQUEST)).backend == "m1"
    await router.aclose()


async def test_a_half_open_trial_in_flight_leaves_the_new_breaker_a_free_trial() -> None:
    backends = {name: ScriptedBackend(name) for name in ("m1", "m2", "m3")}
    clock = FakeClock()
    config = make_config(threshold=1)
    router = make_router(config, backends, clock)
    backends["m1"].behaviour = "refused"
    await router.reason(REQUEST)
    clock.now += 31
    backends["m1"].behaviour = "ok"
    backends["m1"].gate = asyncio.Event()
    trial = asyncio.ensure_future(router.reason(REQUEST))
    await asyncio.sleep(0.01)
    assert router.circuit("m1").state is CircuitState.half_open
    router.replace_config(with_reason(config, circuit={"failure_threshold": 2}))
    assert router.circuit("m1").admit() is None  # the new breaker's trial, not "a trial is in flight"
    backends["m1"].gate.set()
    assert (await trial).backend == "m1"
    await router.aclose()


# ---------------------------------------------------------------- reason.local_queue
async def test_a_new_local_queue_takes_new_calls_and_a_call_holding_an_old_slot_finishes() -> None:
    backends = {name: ScriptedBackend(name) for name in ("m1", "m2", "m3")}
    config = make_config(first_token_s=5, queue={"size": 4, "concurrency": 1})
    router = make_router(config, backends, FakeClock())
    backends["m1"].behaviour = backends["m2"].behaviour = "refused"  # the chain ends in the queue
    backends["m3"].gate = asyncio.Event()
    holding = asyncio.ensure_future(router.reason(REQUEST))
    await asyncio.sleep(0.01)
    assert router.stats()["local_queue"] == {"waiting": 0, "running": 1, "size": 4}
    router.replace_config(with_reason(config, local_queue={"size": 8, "concurrency": 2}))
    new = [asyncio.ensure_future(router.reason(REQUEST)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert router.stats()["local_queue"] == {"waiting": 1, "running": 2, "size": 8}
    backends["m3"].gate.set()
    assert [a.backend for a in await asyncio.gather(holding, *new)] == ["m3"] * 4
    await router.aclose()


# ---------------------------------------------------------------- reason.timeouts.connect_s
def sim_config(url: str, connect_s: float) -> StacksConfig:
    model = {"runtime": "docker", "placement": "gpu", "api": "openai", "endpoint": f"{url}/v1"}
    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "roles": {"orchestrator": {"required": True}},
            "models": {name: {**model, "docker": {"container": name}} for name in ("m1", "m2")},
            "stacks": {"s": {"roles": {"orchestrator": "m2"}, "members": ["m1"]}},
            "reason": {
                "strategies": {"one": {"models": ["m1"]}},
                "default_chain": ["one"],
                "timeouts": {"connect_s": connect_s, "first_token_s": 10, "total_s": 20},
            },
        }
    )


async def test_a_new_connect_timeout_gets_a_new_session_and_the_old_closes_after_its_calls() -> None:
    async with OpenAISim(control=SimControl(latency_ms=300, tokens=4, chunk_interval_ms=50)) as sim:
        config = sim_config(sim.url, connect_s=2)
        sessions: list[HttpClient] = []

        def factory(name: str, client: HttpClient) -> Backend | None:
            sessions.append(client)
            return build_backend(router.config, name, client)

        roles = LiveRoles(RoleTable("s", {"orchestrator": "m2"}, frozenset({"m1"})))
        router = ReasonRouter(config, roles, backend_factory=factory)
        request = ChatRequest([{"role": "user", "content": "hi"}])
        plain = asyncio.ensure_future(router.reason(request))
        streamed: list[Any] = []

        async def read_stream() -> None:
            route = router.reason_route()
            async for item in router.stream(route, request):
                streamed.append(item)

        stream = asyncio.ensure_future(read_stream())
        await asyncio.sleep(0.1)  # both calls are on the wire, on the first session
        router.replace_config(sim_config(sim.url, connect_s=5))
        await asyncio.sleep(0.05)
        assert not sessions[0].closed  # two calls still run on it
        assert (await router.reason(request)).text  # a new call: a new session, with the new limit
        assert sessions[-1] is not sessions[0]
        assert sessions[-1].connect_s == 5
        assert (await plain).text  # the calls in flight were not cut
        await stream
        assert isinstance(streamed[-1], StreamDone) and sum(isinstance(i, TextDelta) for i in streamed) == 4
        for _ in range(100):  # closed once they ended
            if sessions[0].closed:
                break
            await asyncio.sleep(0.01)
        assert sessions[0].closed and not sessions[-1].closed
        await router.aclose()
        assert sessions[-1].closed


async def test_a_reload_that_changes_none_of_them_keeps_the_breakers_queue_and_session() -> None:
    async with OpenAISim() as sim:
        config = sim_config(sim.url, connect_s=2)
        router = ReasonRouter(config, LiveRoles(RoleTable("s", {"orchestrator": "m2"}, frozenset({"m1"}))))
        await router.reason(ChatRequest([{"role": "user", "content": "hi"}]))
        circuit, queue, session = router.circuit("m1"), router._queue, router._pool.current
        router.replace_config(sim_config(sim.url, connect_s=2))
        assert (router.circuit("m1"), router._queue, router._pool.current) == (circuit, queue, session)
        await router.aclose()
