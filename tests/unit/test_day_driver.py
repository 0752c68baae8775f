"""The day policy applied (stackd/manager/day.py) over the in-memory world, on a fake clock: a
window fires and after a restart a missed one is fired late or reported missed; idle downshift
after N seconds; a gateway call for a role only the upper stack has wakes it and is answered,
saying it waited, with concurrent wakes making one switch; a lease defers a scheduled switch and
/status and /schedule say why; a manual switch with ``hold`` shows as the hold.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import httpx
import pytest

from stackd.api.app import create_app
from stackd.manager import ModelStackManager
from stackd.manager.day import DayDriver
from stackd.router import ReasonRouter
from stackd.router.types import ChatRequest, Completion, StreamEvent, StreamFinish, TextDelta, Usage
from stackd.schedule.policy import LeaseView
from stackd.settings import Settings
from stackd.state.day_policy import DayPolicyStore
from tests.unit.test_day_policy import DAY, NIGHT, at, chained_config, day_config
from tests.unit.test_manager_world import World, close_all, make_world

TOKEN = "day-driver-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Answering:
    """A backend that answers with its own name after ``delay_s``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.request_model = name
        self.calls = 0

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        return Completion(f"answered by {self.name}", "stop", Usage(3, 3))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.calls += 1
        yield TextDelta(f"answered by {self.name}")
        yield StreamFinish("stop", Usage(3, 3))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make_world(tmp_path, day_config(idle_after_s=600))
    w.now[0] = at("2026-03-30 08:00")  # Monday morning, Paris
    yield w
    await close_all(w)


async def settled(manager: ModelStackManager) -> None:
    """Until the switch in progress (if any) has ended."""
    for _ in range(100):
        current = manager.current_switch
        if current is None:
            return
        await current.finished.wait()
    raise AssertionError("a switch never ended")


async def started(world: World, stack: str) -> ModelStackManager:
    manager = world.manager()
    handle = await manager.submit_switch(stack)
    assert await handle.wait() == "succeeded"
    return manager


def driver(world: World, manager: ModelStackManager, leases: list[LeaseView] | None = None) -> DayDriver:
    return DayDriver(
        manager, DayPolicyStore(world.db), clock=lambda: world.now[0], leases=lambda: leases or []
    )


async def test_a_window_fires_at_its_time_and_a_restart_fires_a_missed_one(world: World) -> None:
    manager = await started(world, NIGHT)
    day = driver(world, manager)
    assert (await day.tick()).action == "none"  # 08:00: Sunday 18:00's window still runs
    world.now[0] = at("2026-03-30 09:00")
    decision = await day.tick()
    assert decision.action == "switch" and "switching (switch" in decision.why
    await settled(manager)
    assert manager.active_stack == DAY and world.running_stack(DAY), world.describe()
    # Stopped over the evening window; started again 4 minutes after it: it fires, late.
    world.now[0] = at("2026-03-30 18:04")
    restarted = world.manager()
    await restarted.recover()
    assert restarted.active_stack == DAY
    again = driver(world, restarted)
    late = await again.tick()
    assert late.action == "switch" and "fired 240 s late" in late.notes[0], late.notes
    await settled(restarted)
    assert restarted.active_stack == NIGHT and world.running_stack(NIGHT)


async def test_a_window_missed_beyond_the_grace_is_reported_and_the_current_one_applies(world: World) -> None:
    manager = await started(world, NIGHT)
    await driver(world, manager).tick()  # 08:00: remembers Sunday's window
    world.now[0] = at("2026-03-30 11:00")  # the daemon was down over 09:00
    restarted = world.manager()
    await restarted.recover()
    decision = await driver(world, restarted).tick()
    assert decision.action == "switch" and decision.intended == DAY
    assert "while stackd was stopped (missed by 7200 s" in decision.notes[0]
    await settled(restarted)


async def test_idle_downshift_then_concurrent_calls_for_vision_wake_the_day_stack_once(
    world: World, tmp_path: Path
) -> None:
    world.now[0] = at("2026-03-30 09:00")
    manager = await started(world, DAY)
    day = driver(world, manager)
    assert (await day.tick()).action == "none"
    world.now[0] += 599
    assert (await day.tick()).action == "none"
    world.now[0] += 1
    down = await day.tick()
    assert down.action == "switch" and down.intended == NIGHT and "had no call for 600 s" in down.why
    await settled(manager)
    assert manager.active_stack == NIGHT and world.running_stack(NIGHT)
    world.now[0] += 60
    assert (await day.tick()).action == "none"  # stays down: nobody called

    backends: dict[str, Answering] = {name: Answering(name) for name in world.config.models}
    router = ReasonRouter(
        world.config, manager.live_roles, backend_factory=lambda name, session: backends[name]
    )
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, router=router, day=day)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://stackd", headers=AUTH) as c:
        body = {"model": "vision", "messages": [{"role": "user", "content": "describe"}]}
        calls = [c.post("/v1/chat/completions", json=body) for _ in range(3)]
        streamed = c.post("/v1/chat/completions", json={**body, "stream": True})
        answers = await asyncio.wait_for(asyncio.gather(*calls, streamed), 10)
        for answer in answers[:3]:
            assert answer.status_code == 200, answer.text
            payload = answer.json()
            assert payload["choices"][0]["message"]["content"] == "answered by vision-qwen25vl"
            assert payload["stackd"]["wake"]["woke"] == DAY and payload["stackd"]["wake"]["waited_s"] >= 0
        chunks = [json.loads(line[6:]) for line in answers[3].text.splitlines() if line.startswith("data: {")]
        assert chunks[-1]["stackd"]["wake"]["woke"] == DAY
        assert day.wakes == 1  # one switch for four calls
        assert manager.active_stack == DAY and backends["vision-qwen25vl"].calls == 4
        # Woken, it is the day stack's again, and its idle timer starts afresh.
        assert (await day.tick()).action == "none"
        schedule = (await c.get("/schedule")).json()
        assert schedule["configured"] and schedule["wakes"] == 1 and schedule["idle"] is None


async def test_a_lease_defers_the_evening_window_and_status_says_why(world: World, tmp_path: Path) -> None:
    world.now[0] = at("2026-03-30 17:00")
    manager = await started(world, DAY)
    lease = LeaseView("vision-qwen25vl", at("2026-03-30 18:30"), "lease-7")
    day = driver(world, manager, [lease])
    await day.tick()
    world.now[0] = at("2026-03-30 18:00")
    decision = await day.tick()
    assert decision.action == "wait" and manager.current_switch is None and manager.active_stack == DAY
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, day=day)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://stackd", headers=AUTH) as c:
        status = (await c.get("/status")).json()
        why = status["schedule"]["why"]
        assert "lease lease-7 holds vision-qwen25vl until Mon 2026-03-30 18:30 CEST" in why, why
        assert status["schedule"]["window"]["stack"] == NIGHT and status["schedule"]["action"] == "wait"
        # A manual switch with a two-hour hold: the hold, its end and the next change are shown.
        switched = await c.post("/model-stacks/switch", json={"stack": NIGHT, "hold": "2h"})
        assert switched.status_code == 200 and switched.json()["state"] == "succeeded", switched.text
        await day.tick()
        schedule = (await c.get("/schedule")).json()
        assert schedule["hold"] == {
            "stack": NIGHT,
            "until": at("2026-03-30 20:00"),
            "until_local": "Mon 2026-03-30 20:00 CEST",
            "source": "--hold 7200s",
        }
        assert schedule["next_change"]["when"] == "Tue 2026-03-31 09:00 CEST"
        refused = await c.post("/model-stacks/switch", json={"stack": NIGHT, "hold": "soon"})
        assert refused.status_code == 422 and "2h, 90m" in refused.text


async def test_a_wake_past_its_bound_answers_503_with_retry_after_and_the_switch_goes_on(
    world: World, tmp_path: Path
) -> None:
    config = world.config
    rule = config.stacks[DAY].idle
    assert rule is not None
    bounded = rule.model_copy(update={"wake_wait_role_s": {"vision": 0.2}})
    world.config = config.model_copy(
        update={"stacks": {**config.stacks, DAY: config.stacks[DAY].model_copy(update={"idle": bounded})}}
    )
    world.now[0] = at("2026-03-30 09:00")
    manager = await started(world, DAY)
    day = driver(world, manager)
    await day.tick()
    world.now[0] += 600
    await day.tick()
    await settled(manager)
    assert manager.active_stack == NIGHT
    # A job queued on the manager's worker before the wake's switch (a lease's grant, a reload):
    # the switch waits behind it, and the call waits no longer than its role's bound.
    gate = asyncio.Event()
    blocker = asyncio.create_task(manager.run_exclusive(gate.wait))
    backends = {name: Answering(name) for name in world.config.models}
    router = ReasonRouter(
        world.config, manager.live_roles, backend_factory=lambda name, session: backends[name]
    )
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, router=router, day=day)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://stackd", headers=AUTH) as c:
        body = {"model": "vision", "messages": [{"role": "user", "content": "describe"}]}
        answer = await c.post("/v1/chat/completions", json=body)
        assert answer.status_code == 503, answer.text
        assert "waited 0.2 s for stack 'cloud-offload' to wake (its switch goes on)" in answer.text
        gate.set()
        await blocker
        await settled(manager)  # the one switch the timed-out call started
        again = await asyncio.wait_for(c.post("/v1/chat/completions", json=body), 10)
        assert again.status_code == 200, again.text
        assert again.json()["choices"][0]["message"]["content"] == "answered by vision-qwen25vl"
        assert "wake" not in again.json()["stackd"]  # it was up: nothing to wait for
    assert day.wakes == 1 and manager.active_stack == DAY


async def test_a_restart_over_the_dst_night_fires_the_next_window_at_its_local_time(world: World) -> None:
    """Stopped on Friday evening (CET) with the day stack held by hand, started again on Monday
    09:00:20 CEST: the hold ended at Friday's 18:00 window, Monday's 09:00 window is the current
    one and its start is 09:00 local time on the far side of the clock change."""
    world.now[0] = at("2026-03-27 17:00")
    manager = await started(world, DAY)
    day = driver(world, manager)
    await day.tick()
    day.hold(DAY, None)  # a manual switch: held until the next window begins (18:00 CET)
    world.now[0] = at("2026-03-30 09:00") + 20
    restarted = world.manager()
    await restarted.recover()
    again = driver(world, restarted)
    assert again.state.hold is not None and again.state.hold.until == at("2026-03-27 18:00")
    decision = await again.tick()
    assert decision.action == "none" and decision.intended == DAY  # the day stack runs: its window
    assert decision.window is not None and decision.window.at == at("2026-03-30 09:00")
    assert "window 0 ('cloud-offload') began at Mon 2026-03-30 09:00 CEST" in decision.notes[0]
    assert again.state.hold is None and decision.next_change is not None
    assert decision.next_change.at == at("2026-03-30 18:00")


async def test_an_idle_chain_steps_down_twice_and_one_call_wakes_the_day_stack(
    world: World, tmp_path: Path
) -> None:
    world.config = chained_config()  # the day stack idles to the night stack, that one to embedded
    world.now[0] = at("2026-03-30 09:00")
    manager = await started(world, DAY)
    day = driver(world, manager)
    await day.tick()
    world.now[0] += 600
    assert (await day.tick()).intended == NIGHT
    await settled(manager)
    assert (await day.tick()).action == "none"  # the night stack is seen up now; its quiet starts
    world.now[0] += 300
    deeper = await day.tick()
    assert deeper.action == "switch" and deeper.intended == "embedded", deeper.why
    await settled(manager)
    assert manager.active_stack == "embedded" and world.running_stack("embedded"), world.describe()
    schedule = day.view()
    assert schedule["idle"]["upper"] == DAY and schedule["idle"]["lower"] == "embedded"
    assert schedule["idle"]["depth"] == 2 and "idle chain reached 'embedded'" in (await day.tick()).why
    backends = {name: Answering(name) for name in world.config.models}
    router = ReasonRouter(
        world.config, manager.live_roles, backend_factory=lambda name, session: backends[name]
    )
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, router=router, day=day)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://stackd", headers=AUTH) as c:
        body = {"model": "vision", "messages": [{"role": "user", "content": "describe"}]}
        answer = await asyncio.wait_for(c.post("/v1/chat/completions", json=body), 10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["stackd"]["wake"]["woke"] == DAY and day.wakes == 1
    assert manager.active_stack == DAY and day.state.downshift is None, world.describe()
    assert "processes=[]" in world.describe()  # embedded's engine stopped (vision runs: it was called)


async def test_the_page_shows_the_window_the_next_change_a_hold_and_why_a_switch_waits(
    world: World, tmp_path: Path
) -> None:
    """The status page's data (``status_snapshot``: /status through ``page_snapshot``), from the
    real driver: the schedule line the page's header draws."""
    from stackd.api.page import status_snapshot

    world.now[0] = at("2026-03-30 17:00")
    manager = await started(world, DAY)
    lease = LeaseView("vision-qwen25vl", at("2026-03-30 18:30"), "lease-7")
    day = driver(world, manager, [lease])
    await day.tick()
    world.now[0] = at("2026-03-30 18:00")
    assert (await day.tick()).action == "wait"
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, day=day)
    line = (await status_snapshot(services)())["schedule"]
    assert line is not None
    assert "waits (0 of 1800 s): lease lease-7 holds vision-qwen25vl until Mon 2026-03-30 18:30 CEST" in line
    assert "window 'ollama-only' since Mon 2026-03-30 18:00 CEST" in line, line
    assert "next 'cloud-offload' at Tue 2026-03-31 09:00 CEST" in line, line
    day.hold(DAY, 7200)
    await day.tick()
    held = (await status_snapshot(services)())["schedule"]
    assert held is not None
    assert held.startswith("held by --hold 7200s until Mon 2026-03-30 20:00 CEST"), held
    assert "held on 'cloud-offload' until Mon 2026-03-30 20:00 CEST" in held
