"""Accounting persisted in SQLite (each call's rows, group-committed before it is answered) and
exposed to Prometheus."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stackd.api.metrics import register_router_metrics
from stackd.router import ledger as ledger_module
from stackd.router.accounting import Accounting, Outcome, attempt_row, call_rows
from stackd.router.circuit import CircuitState
from stackd.router.ledger import UsageLedger
from stackd.router.types import FailureKind, Usage
from stackd.state import usage_journal
from stackd.state.keys import KeyedUsageStore, KeyStore
from stackd.state.usage import FAILURE_KINDS, UsageRow, UsageStore
from stackd.state.usage_journal import memory_home
from tests.fake_clock import FakeClock

SOME = (  # three attempts of one call: a refusal, a skip, an answer
    Outcome("cloud_gpu", "r1", "failed", FailureKind.refused, None, 1.5),
    Outcome("cloud_gpu", "r1", "skipped"),
    Outcome("local_elastic", "e12", "answered", None, 40.0, 120.0, Usage(100, 50), 0.25),
)


def record_some(accounting: Accounting) -> None:
    for outcome in SOME:
        accounting.record(outcome)


def some_rows(request_id: str | None) -> list[UsageRow]:
    """``SOME``'s attempts as their call's ledger rows."""
    return call_rows([attempt_row(outcome, request_id) for outcome in SOME])


def test_a_calls_rows_add_up_its_attempts_per_backend_as_the_daemons_tallies_count_them() -> None:
    accounting = Accounting()
    record_some(accounting)
    rows = {(r.strategy, r.backend): r for r in some_rows("call-1")}
    assert len(rows) == 2 and {r.request_id for r in rows.values()} == {"call-1"}
    for (strategy, backend), tally in accounting.tallies.items():
        row = rows[(strategy, backend)]
        assert (row.requests, row.answered, row.skipped) == (tally.requests, tally.answered, tally.skipped)
        assert row.failures == {str(k): v for k, v in tally.failures.items() if v}
        assert (row.first_token_ms_sum, row.first_token_count) == (
            tally.first_token.sum_ms,
            tally.first_token.count,
        )
        assert (row.total_ms_sum, row.total_count) == (tally.total.sum_ms, tally.total.count)
        assert (row.prompt_tokens, row.completion_tokens, row.cost_usd) == (
            tally.prompt_tokens,
            tally.completion_tokens,
            tally.cost_usd,
        )


def test_the_store_knows_every_failure_kind() -> None:
    assert tuple(k.value for k in FailureKind) == FAILURE_KINDS


async def test_calls_land_in_sqlite_with_their_request_ids_and_summary_adds_them_up(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    store = UsageStore(tmp_path / "stackd.db")
    ledger = UsageLedger(store, clock)
    for request_id in ("call-1", "call-2"):
        ledger.record(some_rows(request_id))
        clock.now += 10
    await ledger.aclose()
    assert {r[0] for r in read_ids(tmp_path)} == {"call-1", "call-2"}
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


def one_call(n: int) -> list[UsageRow]:
    return call_rows(
        [attempt_row(Outcome("local", "m", "answered", None, 1.0, 2.0, Usage(1, 1)), f"call-{n}")]
    )


@pytest.fixture(autouse=True)
def memory_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The journal's tmpfs, a directory of the test's own (``/dev/shm`` is the machine's)."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(usage_journal, "MEMORY_DIR", shm)
    return shm


def journal_files(tmp_path: Path) -> list[str]:
    """The journal's files, in the state dir or in the tmpfs home of its database."""
    return sorted(p.name for p in tmp_path.rglob("stackd.db-usage.*"))


def journal_file(tmp_path: Path, name: str) -> Path:
    return next(tmp_path.rglob(name))


RECORD_AND_DIE = """
import os, signal, sys
from pathlib import Path
from stackd.state import usage_journal
from stackd.state.usage_journal import memory_home
usage_journal.MEMORY_DIR = Path(sys.argv[1]).parent / "shm"  # the test's tmpfs, as the parent's
from tests.unit.test_router_usage import one_call
from stackd.state.keys import KeyedUsageStore, KeyStore
db = Path(sys.argv[1])
store = KeyedUsageStore(db, KeyStore(db))
store.claim("call-0", "ide")
for n in range(int(sys.argv[2])):
    store.record(1_700_000_000.0 + n, one_call(n))()
if len(sys.argv) > 3:
    store.drain()
    store.record(1_700_000_000.0, one_call(999))()
os.kill(os.getpid(), signal.SIGKILL)
"""


def record_and_die(tmp_path: Path, calls: int, drain_first: bool = False) -> None:
    """A process records ``calls`` calls (the first keyed), then is SIGKILLed: nothing drains."""
    args = [sys.executable, "-c", RECORD_AND_DIE, str(tmp_path / "stackd.db"), str(calls)]
    done = subprocess.run([*args, "drain"] if drain_first else args, cwd=Path(__file__).parents[2])
    assert done.returncode == -signal.SIGKILL


def killed(store: UsageStore) -> None:
    """``store`` as a SIGKILL leaves it: its files closed, nothing drained."""
    store._journal.close()
    store._db.close()
    store._reader.close()


def test_recorded_rows_survive_a_sigkill_and_are_replayed_once_at_the_next_open(tmp_path: Path) -> None:
    record_and_die(tmp_path, 40)
    assert read_ids(tmp_path) == [] and journal_files(tmp_path) == ["stackd.db-usage.1"]
    keys = KeyStore(tmp_path / "stackd.db")
    store = KeyedUsageStore(tmp_path / "stackd.db", keys)
    assert store.replayed == 40  # call-0's row carries its key
    assert sorted(r[0] for r in read_ids(tmp_path)) == sorted(f"call-{n}" for n in range(40))
    assert keys.spend_since(0.0, 0.0)["ide"].calls == 1
    assert journal_files(tmp_path) == ["stackd.db-usage.2"]  # the replayed file is gone
    store.close()
    again = UsageStore(tmp_path / "stackd.db")
    assert again.replayed == 0 and len(read_ids(tmp_path)) == 40
    again.close()
    keys.close()


def test_a_journal_drained_before_the_crash_is_not_replayed_again(tmp_path: Path) -> None:
    """Drained rows are marked in the drain's own transaction: a crash after it (before the
    file is deleted, or with rows recorded since) replays only what was not drained."""
    record_and_die(tmp_path, 5, drain_first=True)
    assert len(read_ids(tmp_path)) == 5
    home = memory_home(tmp_path / "stackd.db", usage_journal.MEMORY_DIR)
    assert home is not None
    (home / "stackd.db-usage.1").write_bytes(b"")  # as if the crash came before the unlink
    store = UsageStore(tmp_path / "stackd.db")
    assert store.replayed == 1
    assert sorted(r[0] for r in read_ids(tmp_path)) == sorted([*(f"call-{n}" for n in range(5)), "call-999"])
    store.close()


def test_a_line_cut_short_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    record_and_die(tmp_path, 3)
    journal = journal_file(tmp_path, "stackd.db-usage.1")
    raw, cut = journal.read_bytes(), b'[["usage",[1700000000.0,"lo'  # a copy the kill cut short
    end = raw.index(b"\x00")  # the mapped file keeps its allocated size: NULs after the last line
    journal.write_bytes(raw[:end] + cut + raw[end + len(cut) :])
    store = UsageStore(tmp_path / "stackd.db")
    assert store.replayed == 3 and len(read_ids(tmp_path)) == 3
    store.close()


def test_a_full_journal_file_goes_on_in_the_next_and_a_crash_replays_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_journal, "GENERATION_BYTES", 512)  # a few calls' rows each
    store = UsageStore(tmp_path / "stackd.db")
    for n in range(20):
        store.record(1_700_000_000.0, one_call(n))()
    assert len(journal_files(tmp_path)) > 3
    store.record(1_700_000_000.0, one_call(20) * 20)()  # rows bigger than a file
    killed(store)
    again = UsageStore(tmp_path / "stackd.db")
    assert again.replayed == 40 and len(read_ids(tmp_path)) == 40
    again.close()


def test_the_journal_lives_on_the_tmpfs_in_a_directory_of_its_own(tmp_path: Path, memory_dir: Path) -> None:
    store = UsageStore(tmp_path / "stackd.db")
    store.record(1_700_000_000.0, one_call(1))()
    home = memory_home(tmp_path / "stackd.db", memory_dir)
    assert home is not None and home.parent == memory_dir
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in home.iterdir()] == ["stackd.db-usage.1"]
    assert not list(tmp_path.glob("stackd.db-usage.*"))  # nothing in the state dir
    store.close()


@pytest.mark.parametrize("planted", ["a link to another directory", "a directory others may write"])
def test_a_name_planted_on_the_tmpfs_is_never_used(tmp_path: Path, memory_dir: Path, planted: str) -> None:
    """``/dev/shm`` is every user's: what is already there under the journal's name and is not
    this user's private directory sends the journal to the state dir instead."""
    name = (
        f"stackd-{os.geteuid()}-"
        + hashlib.sha256(str((tmp_path / "stackd.db").resolve()).encode()).hexdigest()[:16]
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted.startswith("a link"):
        (memory_dir / name).symlink_to(elsewhere)
    else:
        (memory_dir / name).mkdir()
        (memory_dir / name).chmod(0o777)
    store = UsageStore(tmp_path / "stackd.db")
    store.record(1_700_000_000.0, one_call(1))()
    assert [p.name for p in tmp_path.glob("stackd.db-usage.*")] == ["stackd.db-usage.1"]
    assert not list(elsewhere.iterdir())
    store.close()


def test_a_full_tmpfs_sends_a_file_to_the_state_dir_and_both_are_replayed(
    tmp_path: Path, memory_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_journal, "GENERATION_BYTES", 512)
    store = UsageStore(tmp_path / "stackd.db")
    for n in range(3):
        store.record(1_700_000_000.0, one_call(n))()
    allocate = usage_journal.allocate

    def tmpfs_full(fd: int, size: int) -> None:
        if str(os.readlink(f"/proc/self/fd/{fd}")).startswith(str(memory_dir)):
            raise OSError(errno.ENOSPC, "No space left on device")
        allocate(fd, size)

    monkeypatch.setattr(usage_journal, "allocate", tmpfs_full)
    for n in range(3, 12):
        store.record(1_700_000_000.0, one_call(n))()
    assert list(tmp_path.glob("stackd.db-usage.*")) and list(memory_dir.rglob("stackd.db-usage.*"))
    killed(store)
    again = UsageStore(tmp_path / "stackd.db")
    assert again.replayed == 12 and len(read_ids(tmp_path)) == 12
    again.close()


async def test_recording_touches_no_sqlite_and_one_drain_takes_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "DRAIN_AFTER_S", 0.05)
    store = UsageStore(tmp_path / "stackd.db")
    ledger = UsageLedger(store, lambda: 1_700_000_000.0)
    for n in range(50):
        ledger.record(one_call(n))
    assert read_ids(tmp_path) == []  # in the journal only: nothing waited on SQLite
    assert journal_files(tmp_path) == ["stackd.db-usage.1"]
    await asyncio.sleep(0.3)
    assert len(read_ids(tmp_path)) == 50
    assert journal_files(tmp_path) == ["stackd.db-usage.2"]  # one drain: one generation closed
    ledger.record([])  # nothing to record: no drain
    await asyncio.sleep(0.1)
    assert journal_files(tmp_path) == ["stackd.db-usage.2"]
    await ledger.aclose()
    store.close()


async def test_a_read_sees_every_recorded_call_without_waiting_for_the_drain(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "stackd.db")
    ledger = UsageLedger(store, lambda: 1_700_000_000.0)
    for n in range(3):
        ledger.record(one_call(n))
    assert store.summary()[0]["answered"] == 3  # caught up before the read
    await ledger.aclose()
    store.close()


async def test_a_drain_behind_another_writer_waits_in_its_thread_while_calls_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds SQLite's write lock: recording goes on (the loop never waits on
    SQLite), a read answers with what was drained, and the drain lands once the lock is free."""
    monkeypatch.setattr(ledger_module, "DRAIN_AFTER_S", 0.01)
    store = UsageStore(tmp_path / "stackd.db")
    ledger = UsageLedger(store, lambda: 1_700_000_000.0)
    blocker = sqlite3.connect(tmp_path / "stackd.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.3, blocker.execute, "COMMIT")
    started = asyncio.get_running_loop().time()
    for n in range(20):
        ledger.record(one_call(n))
        await asyncio.sleep(0.005)
    assert asyncio.get_running_loop().time() - started < 0.29  # nothing waited for the lock
    assert store.summary() == []  # the read did not wait either
    await asyncio.sleep(0.5)
    assert len(read_ids(tmp_path)) == 20
    await ledger.aclose()
    blocker.close()
    store.close()


async def test_a_failed_drain_keeps_its_rows_and_the_next_writes_them_once(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "stackd.db")
    store.record(1_700_000_000.0, one_call(1))
    blocker = sqlite3.connect(tmp_path / "stackd.db", isolation_level=None, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    store._db.execute("PRAGMA busy_timeout=0")  # the drain fails at once: "database is locked"
    with pytest.raises(sqlite3.OperationalError):
        store.drain()
    blocker.execute("COMMIT")
    store.record(1_700_000_000.0, one_call(2))
    assert store.drain()
    assert sorted(r[0] for r in read_ids(tmp_path)) == ["call-1", "call-2"]
    assert journal_files(tmp_path) == ["stackd.db-usage.3"]  # both closed generations deleted
    store.close()
    assert UsageStore(tmp_path / "stackd.db").replayed == 0
    blocker.close()


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
    for strategy, usage in (
        ("preset:elastic:small", Usage(100, 20)),
        ("preset:elastic:small", Usage(None, 5, estimated=True)),
        ("preset:elastic:large", Usage(7, 3)),
        ("preset:plain", Usage(50, 50)),  # a preset without slices
        ("local", Usage(900, 100)),
    ):
        ledger.record([attempt_row(Outcome(strategy, "m", "answered", None, 1.0, 1.0, usage))])
    await ledger.aclose()
    clock.now += 86400  # the next day: yesterday's rows are not today's spending
    store.write(
        clock.now,
        [attempt_row(Outcome("preset:elastic:small", "m", "answered", None, 1.0, 1.0, Usage(1, 1)))],
    )

    restarted = SliceControls(clock)
    restarted.restore(slice_spending(store.strategy_tokens("preset:", day_start(clock.now))))
    assert restarted.spent("elastic", "small") == 2
    restarted.restore(slice_spending(store.strategy_tokens("preset:", day_start(clock.now - 86400))))
    assert restarted.spent("elastic", "small") == 2 + 127
    assert restarted.spent("elastic", "large") == 10
    await store.aclose()


async def test_a_keyed_call_is_its_keys_from_the_moment_it_is_recorded(tmp_path: Path) -> None:
    """Each row carries its call's key (the listeners hear of it at once, the limits count it),
    in the rows' own journal append and transaction."""
    keys = KeyStore(tmp_path / "stackd.db")
    store = KeyedUsageStore(tmp_path / "stackd.db", keys)
    heard: list[tuple[str, int, float]] = []
    store.on_call(lambda key, tokens, cost: heard.append((key, tokens, cost)))
    ledger = UsageLedger(store, lambda: 1_700_000_000.0)
    store.claim("call-1", "ide")
    store.claim("call-2", "ide")
    ledger.record(one_call(1))
    ledger.record(one_call(2))
    ledger.record(one_call(3))  # nobody's key
    assert heard == [("ide", 2, 0.0), ("ide", 2, 0.0)]
    spend = keys.spend_since(0.0, 0.0)["ide"]  # the read catches up first
    assert (spend.calls, spend.tokens) == (2, 4)
    with sqlite3.connect(tmp_path / "stackd.db") as db:
        keyed = db.execute("SELECT request_id, key FROM usage ORDER BY request_id").fetchall()
    assert keyed == [("call-1", "ide"), ("call-2", "ide"), ("call-3", None)]
    await ledger.aclose()
    await store.aclose()
    keys.close()


def test_a_call_is_counted_once_for_its_key_whatever_it_tried_and_however_often_it_was_recorded(
    tmp_path: Path,
) -> None:
    """A call that tried two backends has two rows; a sliced call reaches the ledger in more than
    one batch: each is one call of its key, at the time of its first row."""
    keys = KeyStore(tmp_path / "stackd.db")
    store = KeyedUsageStore(tmp_path / "stackd.db", keys)
    store.claim("call-1", "ide")
    store.write(1_700_000_000.0, some_rows("call-1"))  # two backends, 150 tokens, $0.25
    store.write(1_700_000_005.0, one_call(1))  # call-1's second batch: 2 tokens
    spend = keys.spend_since(0.0, 0.0)["ide"]
    assert (spend.calls, spend.tokens, spend.cost_usd, spend.recent) == (1, 152, 0.25, (1_700_000_000.0,))
    assert keys.spend_since(1_700_000_001.0, 1_700_000_001.0)["ide"].recent == (1_700_000_005.0,)
    store.close()
    keys.close()


OLDER_JOURNAL_LINE = (
    b'[["usage",[1700000000.0,"local","m",1,1,0,0,0,0,0,0,0,0,1.0,1,2.0,1,3,4,0.5,0,0,"old-1"]],'
    b'["key_usage",[1700000000.0,"ide","old-1",7,0.5]]]\n'
)


def test_an_older_stackds_journal_and_key_usage_rows_are_replayed_and_counted(tmp_path: Path) -> None:
    """A journal an older stackd left (rows without their key, a ``key_usage`` record beside
    them) replays into both tables; a key's spend adds ``key_usage``'s rows to the ledger's."""
    home = memory_home(tmp_path / "stackd.db", usage_journal.MEMORY_DIR)
    assert home is not None
    (home / "stackd.db-usage.1").write_bytes(OLDER_JOURNAL_LINE)
    keys = KeyStore(tmp_path / "stackd.db")
    store = KeyedUsageStore(tmp_path / "stackd.db", keys)
    assert store.replayed == 2
    with sqlite3.connect(tmp_path / "stackd.db") as db:
        assert db.execute("SELECT request_id, key, prompt_tokens FROM usage").fetchall() == [
            ("old-1", None, 3)
        ]
    store.claim("new-1", "ide")
    store.write(1_700_000_010.0, [one_call(1)[0]._replace(request_id="new-1")])
    spend = keys.spend_since(0.0, 0.0)["ide"]
    assert (spend.calls, spend.tokens, spend.cost_usd) == (2, 9, 0.5)
    assert spend.recent == (1_700_000_000.0, 1_700_000_010.0)
    store.close()
    keys.close()


def test_the_key_store_alone_reads_no_spend_from_a_new_database(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.db")  # no usage store beside it: the table is made empty
    assert keys.spend_since(0.0, 0.0) == {}
    keys.close()


def test_a_read_whose_catch_up_fails_answers_with_what_was_drained(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "stackd.db")
    store.write(1_700_000_000.0, one_call(1))  # drained
    store.record(1_700_000_000.0, one_call(2))()  # waiting
    blocker = sqlite3.connect(tmp_path / "stackd.db", isolation_level=None, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    store._db.execute("PRAGMA busy_timeout=0")  # the catch-up's drain fails at once
    assert store.summary()[0]["answered"] == 1
    blocker.execute("COMMIT")
    assert store.summary()[0]["answered"] == 2  # the next read's catch-up writes it
    blocker.close()
    store.close()
