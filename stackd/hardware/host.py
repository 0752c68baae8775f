"""Host RAM and CPU count, read through psutil."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True)
class HostResources:
    ram_total_mib: int
    ram_available_mib: int
    cpu_count: int


def read_host() -> HostResources:
    """Read RAM (total and available to new processes, in MiB) and logical CPUs. Blocks < 1 ms."""
    memory = psutil.virtual_memory()
    return HostResources(
        ram_total_mib=int(memory.total) // MIB,
        ram_available_mib=int(memory.available) // MIB,
        cpu_count=psutil.cpu_count(logical=True) or 1,
    )
