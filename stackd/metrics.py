"""Prometheus metrics of the router, read from its accounting at scrape time.

Nothing is counted twice and the hot path pays nothing for Prometheus: ``RouterCollector``
turns the router's in-memory tallies into counter and histogram families when ``/metrics`` is
scraped. Register it once: ``register_router_metrics(registry, router)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from stackd.router.accounting import LATENCY_BUCKETS_MS, Accounting, LatencyTally
from stackd.router.circuit import CircuitState

LABELS = ["strategy", "backend"]


class RouterLike(Protocol):
    accounting: Accounting

    def circuit_states(self) -> dict[str, CircuitState]: ...


def _histogram(name: str, doc: str, tallies: list[tuple[list[str], LatencyTally]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=LABELS)
    for labels, tally in tallies:
        cumulative, buckets = 0, []
        for bound, count in zip([*LATENCY_BUCKETS_MS, float("inf")], tally.buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound / 1000), cumulative))
        family.add_metric(labels, buckets, tally.sum_ms / 1000)
    return family


class RouterCollector(Collector):
    def __init__(self, router: RouterLike) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        tallies = sorted(self._router.accounting.tallies.items())
        requests = CounterMetricFamily("stackd_router_requests", "Attempts sent to a backend.", labels=LABELS)
        answered = CounterMetricFamily("stackd_router_answered", "Attempts that answered.", labels=LABELS)
        skipped = CounterMetricFamily(
            "stackd_router_skipped", "Attempts skipped (stack, circuit, queue).", labels=LABELS
        )
        failures = CounterMetricFamily(
            "stackd_router_failures", "Failed attempts by kind.", labels=[*LABELS, "kind"]
        )
        tokens = CounterMetricFamily("stackd_router_tokens", "Tokens of answers.", labels=[*LABELS, "type"])
        cost = CounterMetricFamily(
            "stackd_router_cost_usd", "Cost of answers at the configured price.", labels=LABELS
        )
        for (strategy, backend), tally in tallies:
            labels = [strategy, backend]
            requests.add_metric(labels, tally.requests)
            answered.add_metric(labels, tally.answered)
            skipped.add_metric(labels, tally.skipped)
            for kind, count in tally.failures.items():
                failures.add_metric([*labels, str(kind)], count)
            tokens.add_metric([*labels, "prompt"], tally.prompt_tokens)
            tokens.add_metric([*labels, "completion"], tally.completion_tokens)
            cost.add_metric(labels, tally.cost_usd)
        yield from (requests, answered, skipped, failures, tokens, cost)
        yield _histogram(
            "stackd_router_first_token_seconds",
            "Time to the first token.",
            [([s, b], t.first_token) for (s, b), t in tallies],
        )
        yield _histogram(
            "stackd_router_total_seconds",
            "Time of the whole attempt.",
            [([s, b], t.total) for (s, b), t in tallies],
        )
        circuit = GaugeMetricFamily(
            "stackd_router_circuit_open", "1 while a backend's circuit is not closed.", labels=["backend"]
        )
        for backend, state in sorted(self._router.circuit_states().items()):
            circuit.add_metric([backend], 0.0 if state is CircuitState.closed else 1.0)
        yield circuit


def register_router_metrics(registry: CollectorRegistry, router: RouterLike) -> RouterCollector:
    collector = RouterCollector(router)
    registry.register(collector)
    return collector
