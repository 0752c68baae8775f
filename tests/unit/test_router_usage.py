"""Accounting persisted in SQLite (batched off the hot path) and exposed to Prometheus."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from stackd.api.metrics import register_router_metrics
from stackd.router.accounting import Accounting, UsageFlusher
from stackd.router.circuit import CircuitState
from stackd.router.types import FailureKind, Usage
from stackd.state.usage import FAILURE_KINDS, UsageStore
from tests.fake_clock import FakeClock


def record_some(accounting: Accounting) -> None:
    accounting.record("cloud_gpu", "r1", "failed", FailureKind.refused, None, 1.5)
    accounting.record("cloud_gpu", "r1", "skipped")
    accounting.record("local_elastic", "e12", "answered", None, 40.0, 120.0, Usage(100, 50), 0.25)


def test_the_store_knows_every_failure_kind() -> None:
    assert tuple(k.value for k in FailureKind) == FAILURE_KINDS


async def test_flushes_land_in_sqlite_and_summary_adds_them_up(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    store = UsageStore(tmp_path / "stackd.db")
    accounting = Accounting()
    flusher = UsageFlusher(accounting, store, clock, interval_s=3600)
    record_some(accounting)
    await flusher.flush()
    clock.now += 10
    record_some(accounting)
    await flusher.aclose()
    rows = {(r["strategy"], r["backend"]): r for r in store.summary()}
    assert rows[("cloud_gpu", "r1")]["requests"] == 2
    assert rows[("cloud_gpu", "r1")]["skipped"] == 2
    assert rows[("cloud_gpu", "r1")]["failures"] == {"refused": 2}
    elastic = rows[("local_elastic", "e12")]
    assert (elastic["answered"], elastic["prompt_tokens"], elastic["completion_tokens"]) == (2, 200, 100)
    assert elastic["cost_usd"] == 0.5
    assert elastic["mean_first_token_ms"] == 40.0
    assert elastic["mean_total_ms"] == 120.0
    recent = store.summary(since=clock.now - 1)
    assert [r["requests"] for r in recent if r["backend"] == "r1"] == [1]
    await store.aclose()


async def test_a_flush_with_nothing_new_writes_nothing(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "stackd.db")
    flusher = UsageFlusher(Accounting(), store, FakeClock(1_700_000_000.0), interval_s=3600)
    await flusher.flush()
    assert store.summary() == []
    await store.aclose()


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
