"""What the machine has, as plain values. Produced by ``stackd.hardware.probe``; read by the planner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_mib: int


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    total_mib: int
    used_mib: int
    free_mib: int
    processes: tuple[GpuProcess, ...] = ()
    # NVML's power draw and enforced limit (watts) and GPU utilisation (percent of the last
    # sample period); None where the device or the scenario does not report them.
    power_w: float | None = None
    power_limit_w: float | None = None
    util_pct: float | None = None


@dataclass(frozen=True)
class HardwareSnapshot:
    """One reading of the machine. ``gpu_state`` says why ``gpus`` is empty when it is."""

    gpus: tuple[GpuDevice, ...]
    ram_total_mib: int
    ram_available_mib: int
    cpu_count: int
    gpu_source: str  # "nvml", "scenario:FILE", "fixed", "none"
    gpu_state: str = "ok"  # "ok" or a sentence such as "no NVIDIA driver (libnvidia-ml.so.1 not found)"

    @property
    def simulated(self) -> bool:
        return self.gpu_source != "nvml"

    def gpu(self, index: int) -> GpuDevice | None:
        return next((g for g in self.gpus if g.index == index), None)


class GpuReader(Protocol):
    """Reads GPU devices. The real one wraps NVML; a scripted one replays a scenario file.

    ``read`` does blocking I/O (NVML calls are fast, < 1 ms each); it never raises for a
    missing driver or GPU: it returns no devices and a ``state`` sentence instead.
    """

    source: str

    def read(self) -> tuple[tuple[GpuDevice, ...], str]: ...
