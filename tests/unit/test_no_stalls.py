"""Nothing holds the event loop: a config reload reads in a worker thread, a SQLite read never
waits for a writer's fsync, and a burst of requests makes no garbage for the cyclic collector
(so no gen-2 collection walks the daemon's heap in the middle of a request)."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stackd.config.models import StacksConfig
from stackd.daemon import GC_THRESHOLDS, settle_heap
from stackd.state.store import StateStore
from stackd.state.usage import UsageRow, UsageStore
from tests.unit.test_asgi_dispatch import AUTH, CHAT, Daemon, build_daemon, call, front_door_config

WRITER_HOLDS_S = 0.5


async def longest_gap_while(work: Awaitable[Any], tick_s: float = 0.01) -> tuple[Any, float]:
    """Run ``work``; meanwhile a ticker on the loop measures the longest the loop was held."""
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(tick_s)
            now = time.perf_counter()
            longest = max(longest, now - last - tick_s)
            last = now

    watch = asyncio.ensure_future(ticker())
    try:
        result = await work
    finally:
        done = True
        await watch
    return result, longest


# ---------------------------------------------------------------- config reload
async def test_a_slow_config_reload_never_holds_the_loop(tmp_path: Path) -> None:
    def slow_load() -> StacksConfig:
        time.sleep(0.5)  # a 10 MB file, a slow disk: read and validated in a worker thread
        return front_door_config()

    d = build_daemon(tmp_path, load_config=slow_load)
    try:
        answer, gap = await longest_gap_while(call(d.app, "POST", "/config/reload", b"", AUTH))
        assert answer.status == 200, answer.body
        assert gap < 0.1, f"the loop was held {gap * 1000:.0f} ms"
    finally:
        await d.router.aclose()
        d.store.close()


# ---------------------------------------------------------------- SQLite reads
@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "stackd.db")
    s.begin_switch("sw1", None, "cloud", {"steps": []})
    s.commit_switch("sw1", {"ok": True})
    yield s
    s.close()


def hold_the_writer(store: StateStore | UsageStore) -> threading.Thread:
    """A writer thread inside a write transaction for ``WRITER_HOLDS_S`` (an fsync on a slow disk)."""
    started = threading.Event()

    def write() -> None:
        with store._lock:  # what a write transaction holds across its fsync
            started.set()
            time.sleep(WRITER_HOLDS_S)

    thread = threading.Thread(target=write)
    thread.start()
    started.wait()
    return thread


def timed(read: Callable[[], Any]) -> float:
    start = time.perf_counter()
    read()
    return time.perf_counter() - start


def test_store_reads_never_wait_for_a_writer(store: StateStore) -> None:
    writer = hold_the_writer(store)
    try:
        assert timed(store.active_stack) < 0.05
        assert timed(lambda: store.get_switch("sw1")) < 0.05
        assert timed(store.open_switch) < 0.05
        assert timed(store.history) < 0.05
        assert writer.is_alive()  # all of it while the writer still held its lock
    finally:
        writer.join()
    assert store.active_stack() == "cloud" and store.get_switch("sw1") is not None


def test_store_reads_see_only_committed_transactions(store: StateStore, tmp_path: Path) -> None:
    other = StateStore(tmp_path / "stackd.db")
    with other._transaction() as db:  # a write begun on another connection, not yet committed
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('active_stack', 'half-written')")
        assert timed(store.active_stack) < 0.05 and store.active_stack() == "cloud"
    assert store.active_stack() == "half-written"
    other.close()


def test_usage_summary_never_waits_for_the_flusher(tmp_path: Path) -> None:
    usage = UsageStore(tmp_path / "stackd.db")
    row = UsageRow("first", "primary", 1, 1, 0, {}, 1.0, 1, 2.0, 1, 10, 3, 0.0)
    usage.write(1000.0, [row])
    writer = hold_the_writer(usage)
    try:
        assert timed(usage.summary) < 0.05 and writer.is_alive()
    finally:
        writer.join()
    assert usage.summary()[0]["requests"] == 1
    usage.close()


async def test_a_switch_read_on_the_loop_does_not_wait_for_a_journal_write(tmp_path: Path) -> None:
    d = build_daemon(tmp_path)
    try:
        d.store.begin_switch("sw1", None, "s", {"steps": []})
        d.store.commit_switch("sw1", {"ok": True})
        writer = hold_the_writer(d.store)
        answer, gap = await longest_gap_while(call(d.app, "GET", "/model-stacks/switch/sw1"))
        assert answer.status == 200 and answer.json()["switch_id"] == "sw1"
        assert gap < 0.05 and writer.is_alive()
        writer.join()
    finally:
        await d.router.aclose()
        d.store.close()


# ---------------------------------------------------------------- the cyclic collector
@pytest.fixture
def settled_heap() -> Iterator[None]:
    """The heap as the daemon leaves it after start-up; the test process's GC restored after."""
    thresholds = gc.get_threshold()
    settle_heap()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.enable()


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = build_daemon(tmp_path)
    yield d
    await d.router.aclose()
    d.store.close()


BURSTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", CHAT),
    "chat, stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "tools": ("/tools/reason", {"problem": "why?"}),
    "tools, stream": ("/tools/reason", {"problem": "why?", "stream": True}),
}


async def burst(d: Daemon, path: str, body: dict[str, Any], requests: int, connections: int = 16) -> None:
    payload = json.dumps(body).encode()

    async def client() -> None:
        for _ in range(requests // connections):
            answer = await call(d.app, "POST", path, payload, AUTH)
            assert answer.status == 200, answer.body

    await asyncio.gather(*(client() for _ in range(connections)))


def test_the_heap_is_frozen_and_the_thresholds_set_after_start_up(settled_heap: None) -> None:
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold() == GC_THRESHOLDS


async def test_a_burst_of_requests_triggers_no_gen2_collection(settled_heap: None, daemon: Daemon) -> None:
    collections: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    await burst(daemon, *BURSTS["chat"], requests=160)  # warm: first-call caches, lazy imports
    gc.callbacks.append(record)
    try:
        for path, body in BURSTS.values():
            await burst(daemon, path, body, requests=1600)
        daemon.backends["primary"].fails = True  # every call fails over: an exception per call
        await burst(daemon, *BURSTS["chat"], requests=1600)
    finally:
        gc.callbacks.remove(record)
    assert 2 not in collections, f"collections by generation: {collections}"


@pytest.mark.parametrize("kind", [*BURSTS, "chat, failover"])
async def test_requests_leave_no_garbage_for_the_cyclic_collector(
    settled_heap: None, daemon: Daemon, kind: str
) -> None:
    """Reference counting frees everything a request allocates: no cycle is left to collect."""
    path, body = BURSTS["chat" if kind == "chat, failover" else kind]
    daemon.backends["primary"].fails = kind == "chat, failover"
    await burst(daemon, path, body, requests=160)  # warm
    gc.collect()
    gc.disable()
    try:
        await burst(daemon, path, body, requests=800)
        cyclic = gc.collect()
    finally:
        gc.enable()
    assert cyclic < 8, f"{cyclic} objects in reference cycles after 800 requests"
