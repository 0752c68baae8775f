"""The status page's data: the ledger bar's segments, a switch's steps, the recent calls, the
feed that serves every follower from one producer, and who may fetch what (the page and its
files without a token; the stream with /status's rule). The page in a browser:
tests/e2e/test_status_page.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import httpx

from stackd.api.app import create_app
from stackd.api.page import StatusFeed
from stackd.api.page_view import SEGMENTS, GpuBar, gpu_bar, switch_steps
from stackd.router.recent import RecentCalls
from stackd.router.types import Attempt
from stackd.settings import Settings
from tests.unit.test_manager_world import close_all, make_world

TOKEN = "page-token-0123456789"


def vram(items: list[dict[str, Any]], total: int = 40960, reserve: int = 3072) -> dict[str, Any]:
    return {"gpu_name": "card", "total_mib": total, "reserve_mib": reserve, "headroom_mib": 0, "items": items}


def item(model: str, mib: int, kind: str, measured: int | None = None) -> dict[str, Any]:
    return {"model": model, "mib": mib, "kind": kind, "measured_mib": measured}


def sizes(bar: GpuBar | None) -> dict[str, int]:
    assert bar is not None
    return {s["kind"]: s["mib"] for s in bar["segments"]}


def test_the_bar_has_six_segments_in_order_and_they_add_up_to_the_card() -> None:
    bar = gpu_bar(
        vram(
            [
                item("orchestrator", 13312, "always_on", measured=12800),
                item("embeddings", 1024, "always_on"),
                item("vision", 8192, "on_demand"),
                item("flux", 12288, "on_demand"),
                item("sdxl", 6144, "on_demand"),  # not resident: budgeted, not drawn
                item("gpu.reserve_gb", 3072, "reserve"),
                item("foreign processes (dwm.exe 1792 MiB)", 1024, "foreign"),
            ]
        ),
        [
            {"name": "vision", "state": "running"},
            {"name": "flux", "state": "running"},
            {"name": "sdxl", "state": "stopped"},
        ],
        leased=["vision"],
    )
    assert [s["kind"] for s in bar["segments"]] == [kind for kind, _ in SEGMENTS]  # type: ignore[index]
    assert sizes(bar) == {
        "always_on": 12800 + 1024,  # the measured size where known
        "leased": 8192,
        "idle_on_demand": 12288,
        "foreign": 1024,
        "reserve": 2048,  # the reserve beyond what foreign processes already take
        "free": 40960 - 12800 - 1024 - 8192 - 12288 - 1024 - 2048,
    }
    always = next(s for s in bar["segments"] if s["kind"] == "always_on")  # type: ignore[index]
    assert always["measured"] is False and [m["name"] for m in always["models"]] == [
        "orchestrator",
        "embeddings",
    ]


def test_foreign_processes_past_the_reserve_leave_no_reserve_segment_and_an_over_full_card_no_free() -> None:
    bar = gpu_bar(
        vram([item("big", 30000, "always_on"), item("foreign processes", 6000, "foreign")], 32768, 6000),
        [],
        [],
    )
    assert sizes(bar)["reserve"] == 0 and sizes(bar)["free"] == 0
    assert gpu_bar(None, [], []) is None


def test_a_switchs_steps_follow_its_events_and_an_earlier_runs_come_from_the_journal() -> None:
    start = {"kind": "start_process", "model": "smollm2-135m-long"}
    bind = {"kind": "bind_role", "role": "orchestrator", "model": "smollm2-135m-long"}
    events = [
        {"type": "step_started", "step": start},
        {"type": "step_done", "step": start},
        {"type": "step_started", "step": bind},
        {"type": "step_failed", "step": bind, "error": "boom"},
        {"type": "undo_step", "step": start, "ok": True, "error": None},
        {"type": "finished", "state": "rolled_back"},
    ]
    assert switch_steps({"events": events}) == [
        {"step": "start_process smollm2-135m-long", "state": "undone", "error": None},
        {"step": "bind_role orchestrator -> smollm2-135m-long", "state": "failed", "error": "boom"},
    ]
    assert switch_steps({"events": [], "steps_done": [start]}) == [
        {"step": "start_process smollm2-135m-long", "state": "done", "error": None}
    ]


def test_recent_calls_keep_the_newest_first_and_no_more_than_asked() -> None:
    now = [0.0]
    recent = RecentCalls(keep=3, clock=lambda: now[0])
    for i in range(5):
        now[0] = float(i)
        recent.record(f"call-{i}", "answered", [Attempt("reflex", "gemma", "answered", "answered", 12.5)])
    newest = recent.newest()
    assert [c["route"] for c in newest] == ["call-4", "call-3", "call-2"]
    assert newest[0]["attempts"] == [
        {
            "strategy": "reflex",
            "backend": "gemma",
            "status": "answered",
            "reason": "answered",
            "elapsed_ms": 12.5,
        }
    ]
    assert [c["route"] for c in recent.newest(1)] == ["call-4"]


async def test_one_producer_serves_every_follower_and_stops_when_the_last_one_leaves() -> None:
    made = [0]

    async def snapshot() -> dict[str, Any]:
        made[0] += 1
        return {"n": made[0] // 3}  # changes every third snapshot

    feed = StatusFeed(snapshot, interval_s=0.01, keepalive_s=5)
    first, second = feed.follow(), feed.follow()
    assert json.loads(await first.__anext__() or "") == {"n": 0}
    assert json.loads(await second.__anext__() or "") == {"n": 0}  # the latest, at once
    assert json.loads(await first.__anext__() or "") == {"n": 1}  # only a changed snapshot is sent
    assert feed.followers == 2
    await first.aclose()
    await second.aclose()
    assert feed.followers == 0
    stopped = made[0]
    await asyncio.sleep(0.05)
    assert made[0] == stopped  # nobody follows: nothing is computed


async def test_an_idle_stream_gets_a_keepalive_and_close_ends_every_stream() -> None:
    async def snapshot() -> dict[str, Any]:
        return {"same": True}

    feed = StatusFeed(snapshot, interval_s=0.01, keepalive_s=0.05)
    stream = feed.follow()
    assert await anext(stream) == '{"same": true}'
    assert await anext(stream) is None  # nothing changed within keepalive_s
    feed.close()
    assert [x async for x in stream] == []


async def served(tmp_path: Path, host: str) -> tuple[Any, httpx.AsyncClient, Any]:
    world = make_world(tmp_path)
    manager = world.manager()
    await manager.recover()
    services = world.services(manager, Settings(host=host, state_dir=tmp_path / "state"), TOKEN)
    app = create_app(services)
    return world, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stackd"), app


async def stream_text(client: httpx.AsyncClient, app: Any, headers: dict[str, str]) -> httpx.Response:
    """GET /status/events, ended by closing the feed (ASGITransport reads a whole answer)."""

    async def close_soon() -> None:
        await asyncio.sleep(0.3)
        app.state.status_feed.close()

    closer = asyncio.get_running_loop().create_task(close_soon())
    answer = await client.get("/status/events", headers=headers)
    await closer
    return answer


async def test_on_a_public_bind_the_page_needs_no_token_and_its_stream_does(tmp_path: Path) -> None:
    world, client, app = await served(tmp_path, "0.0.0.0")
    async with client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert TOKEN not in page.text
        for asset, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            answer = await client.get(f"/page/{asset}")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        # only the page's own files are open: anything else asks for the key first (scopes.py)
        assert (await client.get("/page/secret.py")).status_code == 401
        assert (
            await client.get("/page/secret.py", headers={"Authorization": f"Bearer {TOKEN}"})
        ).status_code == 404
        assert (await client.get("/status/events")).status_code == 401
        answer = await stream_text(client, app, {"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        [event, data] = answer.text.split("\n")[:2]
        assert event == "event: status"
        snapshot = json.loads(data.removeprefix("data: "))
        assert snapshot["active_stack"] == "cloud-offload"
        assert {s["kind"] for s in snapshot["gpu"]["bar"]["segments"]} == {k for k, _ in SEGMENTS}
        assert TOKEN not in answer.text
    await close_all(world)


async def test_on_loopback_the_stream_is_as_open_as_status(tmp_path: Path) -> None:
    world, client, app = await served(tmp_path, "127.0.0.1")
    async with client:
        answer = await stream_text(client, app, {})
        assert answer.status_code == 200 and answer.text.startswith("event: status\n")
    await close_all(world)


async def test_the_router_records_each_call_once_with_its_outcome_and_no_prompt() -> None:
    from stackd.errors import AllStrategiesFailed
    from tests.fake_clock import FakeClock
    from tests.unit.test_router_chain import MODELS, REQUEST, ScriptedBackend, make_config, make_router

    backends = {name: ScriptedBackend(name) for name in MODELS}
    router = make_router(make_config(), backends, FakeClock())
    backends["m1"].behaviour = "refused"
    await router.reason(REQUEST)
    backends["m2"].behaviour = "cut"
    [_ async for _ in router.stream(router.gateway_route("reason"), REQUEST)]
    for backend in backends.values():
        backend.behaviour = "refused"
    with contextlib.suppress(AllStrategiesFailed):
        await router.reason(REQUEST)
    await router.aclose()
    calls = router.recent.newest()
    assert [c["outcome"] for c in calls] == ["failed", "broken", "answered"]
    assert [(a["backend"], a["status"]) for a in calls[2]["attempts"]] == [
        ("m1", "failed"),
        ("m2", "answered"),
    ]
    assert [(a["backend"], a["status"]) for a in calls[1]["attempts"]] == [("m1", "failed"), ("m2", "failed")]
    assert "why?" not in json.dumps(calls)  # the prompt is never kept


def test_the_page_builds_its_dom_from_text_only() -> None:
    """Every string from the daemon goes through textContent or createTextNode: the script has no
    HTML sink at all, and the page loads nothing but its own two files."""
    page = Path(__file__).resolve().parents[2] / "stackd" / "api" / "page_assets"
    script = (page / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    html = (page / "index.html").read_text()
    assert sorted(re.findall(r'(?:src|href)="([^"]+)"', html)) == [
        "/page/app.js",
        "/page/style.css",
        "data:,",
    ]


async def test_recent_switches_are_this_runs_then_the_journals_of_earlier_runs(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    first = world.manager()
    await first.recover()  # the first start applies the default stack
    await (await first.submit_switch("elastic-hybrid")).wait()
    await first.aclose()
    second = world.manager()  # the next daemon run, same state dir
    await second.recover()
    await (await second.submit_switch("ollama-hybrid")).wait()
    recent = second.recent_switches(4)
    assert [(s["from_stack"], s["stack"]) for s in recent] == [
        ("elastic-hybrid", "ollama-hybrid"),  # this run's, with their events
        ("elastic-hybrid", "elastic-hybrid"),  # the start re-applies the persisted stack
        ("cloud-offload", "elastic-hybrid"),  # an earlier run's, from the journal
        (None, "cloud-offload"),
    ]
    assert recent[0]["events"] and recent[1]["events"] and not recent[2]["events"]
    steps = switch_steps(recent[2])
    assert steps and all(step["state"] == "done" for step in steps)
    assert "pull_model elastic-12b (nemotron-elastic:12b)" in {step["step"] for step in steps}
    await close_all(world)
