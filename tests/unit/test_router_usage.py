"""Accounting persisted in SQLite (each call's rows, group-committed before it is answered) and
exposed to Prometheus."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stackd.api.metrics import register_router_metrics
from stackd.router import ledger as ledger_module
from stackd.router.accounting import Accounting, Tally, usage_rows
from stackd.router.circuit import CircuitState
from stackd.router.ledger import UsageLedger
from stackd.router.types import FailureKind, Usage
from stackd.state.keys import KeyedUsageStore, KeyStore
from stackd.state.usage import FAILURE_KINDS, UsageRow, UsageStore
from tests.fake_clock import FakeClock


def record_some(accounting: Accounting, call: dict[tuple[str, str], Tally] | None = None) -> None:
    accounting.record("cloud_gpu", "r1", "failed", FailureKind.refused, None, 1.5, call=call)
    accounting.record("cloud_gpu", "r1", "skipped", call=call)
    accounting.record("local_elastic", "e12", "answered", None, 40.0, 120.0, Usage(100, 50), 0.25, call)


def test_the_store_knows_every_failure_kind() -> None:
    assert tuple(k.value for k in FailureKind) == FAILURE_KINDS


async def test_calls_land_in_sqlite_with_their_request_ids_and_summary_adds_them_up(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    store = UsageStore(tmp_path / "stackd.db")
    accounting = Accounting()
    ledger = UsageLedger(store, clock)
    for request_id in ("call-1", "call-2"):
        call: dict[tuple[str, str], Tally] = {}
        record_some(accounting, call)
        await ledger.commit(usage_rows(call, request_id))
        assert {r[0] for r in read_ids(tmp_path)} >= {request_id}  # committed when commit returns
        clock.now += 10
    await ledger.aclose()
    rows = {(r["strategy"], r["backend"]): r for r in store.summary()}
    assert rows[("cloud_gpu", "r1")]["requests"] == 2
    assert rows[("cloud_gpu", "r1")]["skipped"] == 2
    assert rows[("cloud_gpu", "r1")]["failures"] == {"refused": 2}
    elastic = rows[("local_elastic", "e12")]
    assert (elastic["answered"], elastic["prompt_tokens"], elastic["completion_tokens"]) == (2, 200, 100)
    assert elastic["cost_usd"] == 0.5
    assert elastic["mean_first_token_ms"] == 40.0
    assert elastic["mean_total_ms"] == 120.0
    recent = store.summary(since=clock.now - 11)
    assert [r["requests"] for r in recent if r["backend"] == "r1"] == [1]
    await store.aclose()


def read_ids(tmp_path: Path) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(tmp_path / "stackd.db") as db:
        return db.execute("SELECT request_id, strategy FROM usage").fetchall()


def one_call(accounting: Accounting, n: int) -> list[UsageRow]:
    tallies: dict[tuple[str, str], Tally] = {}
    accounting.record("local", "m", "answered", None, 1.0, 2.0, Usage(1, 1), call=tallies)
    return usage_rows(tallies, f"call-{n}")


class TransactionClock:
    """The ledger's clock, read once per transaction (to stamp its rows): it counts them."""

    def __init__(self) -> None:
        self.transactions = 0

    def __call__(self) -> float:
        self.transactions += 1
        return 1_700_000_000.0


async def test_calls_with_nothing_to_wait_for_commit_on_the_loop_one_transaction_per_turn(
    tmp_path: Path,
) -> None:
    store = UsageStore(tmp_path / "stackd.db")
    clock = TransactionClock()
    ledger = UsageLedger(store, clock)
    accounting = Accounting()

    async def call(n: int) -> None:
        await ledger.commit(one_call(accounting, n))
        assert (f"call-{n}", "local") in read_ids(tmp_path)  # committed when commit returns

    await asyncio.gather(*(call(n) for n in range(50)))  # all reach commit in the same turn
    assert clock.transactions == 1
    for n in range(50, 53):  # one at a time: each its own
        await call(n)
    assert clock.transactions == 4
    assert ledger._task is None  # no writer task, no thread: every commit was made on the loop
    await ledger.commit([])  # nothing to write: returns at once
    await ledger.aclose()
    assert store.summary()[0]["answered"] == 53
    await store.aclose()


async def test_calls_behind_another_writer_share_commits_and_each_returns_only_once_written(
    tmp_path: Path,
) -> None:
    """Another connection holds SQLite's write lock: no call writes on the event loop (it would
    wait), each waits for the writer thread, whose transactions take every call waiting."""
    store = UsageStore(tmp_path / "stackd.db")
    clock = TransactionClock()
    ledger = UsageLedger(store, clock)
    accounting = Accounting()
    blocker = sqlite3.connect(tmp_path / "stackd.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    released = False

    def release() -> None:
        nonlocal released
        released = True
        blocker.execute("COMMIT")

    asyncio.get_running_loop().call_later(0.3, release)  # runs: the loop never waits on SQLite

    async def call(n: int) -> None:
        await ledger.commit(one_call(accounting, n))
        assert released
        assert (f"call-{n}", "local") in read_ids(tmp_path)

    await asyncio.gather(*(call(n) for n in range(50)))
    await ledger.aclose()
    blocker.close()
    assert 1 <= clock.transactions < 50  # grouped: fewer transactions than calls
    assert store.summary()[0]["answered"] == 50
    await store.aclose()


def test_commits_never_checkpoint_the_checkpoint_does(tmp_path: Path) -> None:
    """Past SQLite's automatic checkpoint (1,000 WAL pages) no commit has checkpointed (one on
    the event loop would stall every call); ``checkpoint``, run in the ledger's thread, does."""
    store = UsageStore(tmp_path / "stackd.db")
    accounting = Accounting()
    for n in range(1_100):
        assert store.write_now(1_700_000_000.0, one_call(accounting, n))
    frames, moved = store.checkpoint()
    assert frames > 1_000  # all still in the WAL: nothing checkpointed them on the way
    assert moved == frames
    assert len(read_ids(tmp_path)) == 1_100
    store.close()


class FakeRouter:
    def __init__(self) -> None:
        self.accounting = Accounting()

    def circuit_states(self) -> dict[str, CircuitState]:
        return {"r1": CircuitState.open, "e12": CircuitState.closed}


def test_prometheus_reads_the_tallies_at_scrape_time() -> None:
    router = FakeRouter()
    registry = CollectorRegistry()
    register_router_metrics(registry, router)
    record_some(router.accounting)
    text = generate_latest(registry).decode()
    assert 'stackd_router_failures_total{backend="r1",kind="refused",strategy="cloud_gpu"} 1.0' in text
    assert 'stackd_router_tokens_total{backend="e12",strategy="local_elastic",type="completion"} 50.0' in text
    assert (
        'stackd_router_first_token_seconds_bucket{backend="e12",le="0.05",strategy="local_elastic"} 1.0'
        in text
    )
    assert 'stackd_router_total_seconds_count{backend="e12",strategy="local_elastic"} 1.0' in text
    assert 'stackd_router_circuit_open{backend="r1"} 1.0' in text


async def test_a_slice_budget_spent_before_a_restart_stays_spent(tmp_path: Path) -> None:
    """The day's tokens of each slice come back from the ledger: a restart (or a SIGKILL, since
    a call's rows are committed before it is answered) gives no slice its budget again."""
    from stackd.router.slices.controls import SliceControls, day_start
    from stackd.router.slices.runner import slice_spending

    clock = FakeClock(1_700_000_000.0)
    store = UsageStore(tmp_path / "stackd.db")
    ledger = UsageLedger(store, clock)
    accounting = Accounting()
    for strategy, usage in (
        ("preset:elastic:small", Usage(100, 20)),
        ("preset:elastic:small", Usage(None, 5, estimated=True)),
        ("preset:elastic:large", Usage(7, 3)),
        ("preset:plain", Usage(50, 50)),  # a preset without slices
        ("local", Usage(900, 100)),
    ):
        call: dict[tuple[str, str], Tally] = {}
        accounting.record(strategy, "m", "answered", None, 1.0, 1.0, usage, call=call)
        await ledger.commit(usage_rows(call, None))
    await ledger.aclose()
    clock.now += 86400  # the next day: yesterday's rows are not today's spending
    call = {}
    accounting.record("preset:elastic:small", "m", "answered", None, 1.0, 1.0, Usage(1, 1), call=call)
    store.write(clock.now, usage_rows(call, None))

    restarted = SliceControls(clock)
    restarted.restore(slice_spending(store.strategy_tokens("preset:", day_start(clock.now))))
    assert restarted.spent("elastic", "small") == 2
    restarted.restore(slice_spending(store.strategy_tokens("preset:", day_start(clock.now - 86400))))
    assert restarted.spent("elastic", "small") == 2 + 127
    assert restarted.spent("elastic", "large") == 10
    await store.aclose()


async def test_a_keyed_call_is_its_keys_in_the_same_commit_on_the_loop_or_in_the_thread(
    tmp_path: Path,
) -> None:
    """``key_usage`` is written in the rows' own transaction, whichever path commits them: on the
    event loop (nothing waits) or in the writer thread (another writer holds the lock)."""
    keys = KeyStore(tmp_path / "stackd.db")
    store = KeyedUsageStore(tmp_path / "stackd.db", keys)
    heard: list[tuple[str, int, float]] = []
    store.on_call(lambda key, tokens, cost: heard.append((key, tokens, cost)))
    ledger = UsageLedger(store, lambda: 1_700_000_000.0)
    accounting = Accounting()
    store.claim("call-1", "ide")
    await ledger.commit(one_call(accounting, 1))  # on the loop
    assert ledger._task is None
    blocker = sqlite3.connect(tmp_path / "stackd.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.2, blocker.execute, "COMMIT")
    store.claim("call-2", "ide")
    await ledger.commit(one_call(accounting, 2))  # through the thread
    assert ledger._task is not None
    await ledger.aclose()
    blocker.close()
    assert heard == [("ide", 2, 0.0), ("ide", 2, 0.0)]
    spend = keys.spend_since(0.0, 0.0)["ide"]
    assert (spend.calls, spend.tokens) == (2, 4)
    await store.aclose()
    keys.close()


async def test_the_ledger_checkpoints_every_so_many_commits_on_either_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither path checkpoints by itself (``wal_autocheckpoint=0``): the ledger runs one in a
    thread every ``CHECKPOINT_EVERY`` commits, counting the loop's and the writer thread's."""
    monkeypatch.setattr(ledger_module, "CHECKPOINT_EVERY", 3)
    store = UsageStore(tmp_path / "stackd.db")
    checkpoints: list[tuple[int, int]] = []
    checkpoint = store.checkpoint

    def counted() -> tuple[int, int]:
        checkpoints.append(checkpoint())
        return checkpoints[-1]

    monkeypatch.setattr(store, "checkpoint", counted)
    ledger = UsageLedger(store, lambda: 1_700_000_000.0)
    accounting = Accounting()
    for n in range(3):  # on the loop, one turn each
        await ledger.commit(one_call(accounting, n))
    await asyncio.sleep(0.2)
    assert len(checkpoints) == 1 and checkpoints[0][1] == checkpoints[0][0] > 0
    for n in range(3, 6):  # through the writer thread, one batch each
        ledger.submit(one_call(accounting, n))
        await asyncio.sleep(0.05)
    await ledger.aclose()
    assert len(checkpoints) == 2
    assert len(read_ids(tmp_path)) == 6
    await store.aclose()
