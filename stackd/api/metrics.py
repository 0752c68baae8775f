"""Prometheus metrics, read at scrape time: nothing is counted twice and the hot path pays nothing.

``RouterCollector`` turns the router's in-memory tallies into counter and histogram families;
``StackCollector`` reads the active stack, the live role table, the engine processes and the GPU
as the hardware reader sees it (NVML calls take well under a millisecond). Register each once:
``register_router_metrics(registry, router)``, ``register_stack_metrics(registry, services)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from stackd.drivers.base import ProcessInfo
from stackd.hardware.types import GpuDevice
from stackd.router.accounting import LATENCY_BUCKETS_MS, Accounting, LatencyTally
from stackd.router.circuit import CircuitState
from stackd.router.slices import SliceRouter
from stackd.services import Services

LABELS = ["strategy", "backend"]


class RouterLike(Protocol):
    accounting: Accounting

    def circuit_states(self) -> dict[str, CircuitState]: ...


def _histogram(name: str, doc: str, tallies: list[tuple[list[str], LatencyTally]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=LABELS)
    for labels, tally in tallies:
        family.add_metric(labels, _buckets(tally), tally.sum_ms / 1000)
    return family


def _buckets(tally: LatencyTally) -> list[tuple[str, float]]:
    cumulative, buckets = 0, []
    assert tally.buckets is not None  # the daemon's tallies keep their histograms
    for bound, count in zip([*LATENCY_BUCKETS_MS, float("inf")], tally.buckets, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else str(bound / 1000), float(cumulative)))
    return buckets


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
        inexact = CounterMetricFamily(
            "stackd_router_answers_tokens_inexact",
            "Answers whose token counts are stackd's estimate, or unknown (then not in stackd_router_tokens).",
            labels=[*LABELS, "kind"],
        )
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
            inexact.add_metric([*labels, "estimated"], tally.tokens_estimated)
            inexact.add_metric([*labels, "unknown"], tally.tokens_unknown)
            cost.add_metric(labels, tally.cost_usd)
        yield from (requests, answered, skipped, failures, tokens, inexact, cost)
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


class SliceCollector(Collector):
    """Per (preset, slice): acceptance (first try valid), served calls, promotions, retries, budget
    falls, regret, tokens, cost and latency; and the kill switch."""

    def __init__(self, slices: SliceRouter) -> None:
        self._slices = slices

    def collect(self) -> Iterator[Metric]:
        labels = ["preset", "slice"]
        counters = {
            "tried": "Calls that tried the slice.",
            "accepted_first": "Calls whose first answer on the slice was valid (acceptance = this / tried).",
            "served": "Calls the slice answered.",
            "invalid": "Answers of the slice that failed their validator.",
            "retries": "Failed tool calls retried on the slice.",
            "promotions": "Calls promoted from the slice to a larger one.",
            "budget_falls": "Calls that fell below the slice: its daily tokens spent or rate reached.",
            "regret_replays": "Promotions from the slice replayed on it.",
            "regrets": "Replays that validated: the promotion was not needed.",
            "prompt_tokens": "Prompt tokens of the answers the slice served.",
            "completion_tokens": "Completion tokens of the answers the slice served.",
            "cost_usd": "Cost of the answers the slice served, at the configured price.",
        }
        families = {
            key: CounterMetricFamily(f"stackd_slice_{key}", doc, labels=labels)
            for key, doc in counters.items()
        }
        acceptance = GaugeMetricFamily("stackd_slice_acceptance", "accepted_first / tried.", labels=labels)
        per_1k = GaugeMetricFamily(
            "stackd_slice_cost_per_1k_tokens_usd", "Cost per 1K tokens served.", labels=labels
        )
        tallies = sorted(self._slices.stats.tallies.items())
        for (preset, slice_name), tally in tallies:
            for key, family in families.items():
                family.add_metric([preset, slice_name], getattr(tally, key))
            if tally.acceptance is not None:
                acceptance.add_metric([preset, slice_name], tally.acceptance)
            per_1k.add_metric([preset, slice_name], tally.cost_per_1k_tokens)
        yield from families.values()
        yield acceptance
        yield per_1k
        latency = HistogramMetricFamily(
            "stackd_slice_latency_seconds", "Time of a routed call served by the slice.", labels=labels
        )
        for (preset, slice_name), tally in tallies:
            latency.add_metric([preset, slice_name], _buckets(tally.latency), tally.latency.sum_ms / 1000)
        yield latency
        yield GaugeMetricFamily(
            "stackd_slice_kill_switch",
            "1 while the kill switch forces the largest slice.",
            value=1.0 if self._slices.controls.kill_switch else 0.0,
        )


def register_slice_metrics(registry: CollectorRegistry, slices: SliceRouter) -> SliceCollector:
    collector = SliceCollector(slices)
    registry.register(collector)
    return collector


MIB = 1024 * 1024


class StackCollector(Collector):
    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        services = self._services
        active = GaugeMetricFamily(
            "stackd_stack_active", "1 for the active stack, 0 for the others.", labels=["stack"]
        )
        for name in services.config.stacks:
            active.add_metric([name], 1.0 if name == services.manager.active_stack else 0.0)
        yield active
        table = services.roles.current
        roles = InfoMetricFamily("stackd_role", "The model bound to each role now.", labels=["role", "model"])
        for role, model in sorted(table.bindings.items()):
            roles.add_metric([role, model], {})
        yield roles
        yield GaugeMetricFamily(
            "stackd_role_table_version", "Swaps of the live role table since start.", value=table.version
        )
        degraded = GaugeMetricFamily(
            "stackd_member_degraded",
            "1 for each member that cannot serve now (a remote that does not answer, a swarm member whose "
            "node is down); the reason is in /status.",
            labels=["model"],
        )
        for model in sorted(services.manager.degraded):
            degraded.add_metric([model], 1.0)
        yield degraded
        hardware = services.read_hardware()
        labels = ["gpu", "name"]
        total = GaugeMetricFamily(
            "stackd_gpu_memory_total_bytes", "GPU memory of each device.", labels=labels
        )
        used = GaugeMetricFamily(
            "stackd_gpu_memory_used_bytes", "GPU memory in use (all processes).", labels=labels
        )
        for gpu in hardware.gpus:
            total.add_metric([str(gpu.index), gpu.name], gpu.total_mib * MIB)
            used.add_metric([str(gpu.index), gpu.name], gpu.used_mib * MIB)
        yield total
        yield used
        yield from power_metrics(hardware.gpus, services)
        yield GaugeMetricFamily(
            "stackd_host_memory_available_bytes",
            "Host RAM available.",
            value=hardware.ram_available_mib * MIB,
        )
        yield from process_metrics(services.manager.processes.processes())


def power_metrics(gpus: tuple[GpuDevice, ...], services: Services) -> Iterator[Metric]:
    """Power draw, enforced limit and utilisation as read now; energy drawn since start (a counter
    integrated from the power sampler's readings, stackd.hardware.energy)."""
    labels = ["gpu", "name"]
    power = GaugeMetricFamily("stackd_gpu_power_watts", "Power draw of each device (NVML).", labels=labels)
    limit = GaugeMetricFamily(
        "stackd_gpu_power_limit_watts", "Enforced power limit of each device.", labels=labels
    )
    util = GaugeMetricFamily(
        "stackd_gpu_utilization_ratio", "GPU utilisation over NVML's last sample period, 0..1.", labels=labels
    )
    for gpu in gpus:
        if gpu.power_w is not None:
            power.add_metric([str(gpu.index), gpu.name], gpu.power_w)
        if gpu.power_limit_w is not None:
            limit.add_metric([str(gpu.index), gpu.name], gpu.power_limit_w)
        if gpu.util_pct is not None:
            util.add_metric([str(gpu.index), gpu.name], gpu.util_pct / 100)
    yield from (power, limit, util)
    energy = CounterMetricFamily(
        "stackd_gpu_energy_joules", "Energy each device drew since stackd started.", labels=labels
    )
    meter = services.power.meter if services.power is not None else None
    if meter is not None:
        for index, joules in sorted(meter.joules_by_gpu.items()):
            energy.add_metric([str(index), meter.names.get(index, "")], joules)
    yield energy
    by_stack = CounterMetricFamily(
        "stackd_stack_energy_joules", "GPU energy drawn while each stack was active.", labels=["stack"]
    )
    if meter is not None:
        for stack, joules in sorted(meter.joules_by_stack.items()):
            by_stack.add_metric([stack], joules)
    yield by_stack


def process_metrics(infos: list[ProcessInfo]) -> Iterator[Metric]:
    """Engine processes: up or not, unexpected exits and restarts (counters), resident memory."""
    up = GaugeMetricFamily(
        "stackd_process_up", "1 while the member's engine process is ready.", labels=["model"]
    )
    exits = CounterMetricFamily(
        "stackd_process_exits",
        "Times the member's engine died on its own since stackd started.",
        labels=["model"],
    )
    restarts = GaugeMetricFamily(
        "stackd_process_restarts", "Restarts in a row by the member's restart policy.", labels=["model"]
    )
    rss = GaugeMetricFamily(
        "stackd_process_resident_memory_bytes", "RSS of the engine's process tree.", labels=["model"]
    )
    for info in infos:
        up.add_metric([info.model], 1.0 if info.state == "ready" else 0.0)
        exits.add_metric([info.model], info.exits)
        restarts.add_metric([info.model], info.restarts)
        if info.rss_mib is not None:
            rss.add_metric([info.model], info.rss_mib * MIB)
    yield from (up, exits, restarts, rss)


def register_stack_metrics(registry: CollectorRegistry, services: Services) -> StackCollector:
    collector = StackCollector(services)
    registry.register(collector)
    return collector
