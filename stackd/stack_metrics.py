"""Prometheus metrics of the stack itself, read at scrape time: the active stack, the live role
table and the GPU as the hardware reader sees it (NVML calls take well under a millisecond)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from stackd.drivers.base import ProcessInfo
from stackd.services import Services

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
        yield GaugeMetricFamily(
            "stackd_host_memory_available_bytes",
            "Host RAM available.",
            value=hardware.ram_available_mib * MIB,
        )
        yield from process_metrics(services.manager.processes.processes())


def process_metrics(infos: list[ProcessInfo]) -> Iterator[Metric]:
    """Engine processes: up or not, unexpected exits and restarts (counters), resident memory."""
    up = GaugeMetricFamily("stackd_process_up", "1 while the member's engine process is ready.", labels=["model"])
    exits = CounterMetricFamily(
        "stackd_process_exits", "Times the member's engine died on its own since stackd started.", labels=["model"]
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
