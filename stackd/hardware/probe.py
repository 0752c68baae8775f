"""One reading of the machine, and the choice of GPU reader from the command line.

``make_gpu_reader`` picks a scripted scenario first, then a fixed total, then real NVML, so the
same daemon and CLI run on a laptop, in CI and on the workstation.
"""

from __future__ import annotations

from collections.abc import Callable

from stackd.hardware.host import HostResources, read_host
from stackd.hardware.nvml import NvmlReader
from stackd.hardware.scenario import FixedReader, ScenarioReader
from stackd.hardware.types import GpuReader, HardwareSnapshot


def make_gpu_reader(scenario: str | None, total_gb: float | None) -> GpuReader:
    """Scenario file > fixed total > NVML. Raises ``ConfigError`` for a bad scenario or total."""
    if scenario:
        return ScenarioReader(scenario)
    if total_gb is not None:
        return FixedReader(total_gb)
    return NvmlReader()


def read_hardware(reader: GpuReader, host: Callable[[], HostResources] = read_host) -> HardwareSnapshot:
    """Read the GPUs and the host once. Never raises for a missing GPU: ``gpu_state`` says why."""
    gpus, state = reader.read()
    resources = host()
    return HardwareSnapshot(
        gpus=gpus,
        ram_total_mib=resources.ram_total_mib,
        ram_available_mib=resources.ram_available_mib,
        cpu_count=resources.cpu_count,
        gpu_source=reader.source if gpus else "none",
        gpu_state=state,
    )
