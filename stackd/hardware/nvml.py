"""The real GPU reader: NVML through ``pynvml`` (the nvidia-ml-py package).

The module is injected (``NvmlReader(nvml_module=fake)``) so tests drive this exact code with a
fake that has NVML's functions and raises NVML-style errors; by default ``pynvml`` is imported
on the first read. A machine without the library or the driver is a normal state, not an
error: ``read`` returns no devices and a sentence that says what is missing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar, overload

import psutil

from stackd.hardware.types import GpuDevice, GpuProcess

MIB = 1024 * 1024

# NVML return codes (nvml.h); stable across driver versions.
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15

NVML_LIBRARY = "nvml.dll" if sys.platform == "win32" else "libnvidia-ml.so.1"


Handle = TypeVar("Handle")  # a device handle: opaque, only handed back to the library that made it


class MemoryInfo(Protocol):
    @property
    def total(self) -> int: ...
    @property
    def used(self) -> int: ...
    @property
    def free(self) -> int: ...


class ProcessInfo(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def usedGpuMemory(self) -> int | None: ...  # pynvml's name


class Utilization(Protocol):
    @property
    def gpu(self) -> int: ...


class NvmlLibrary(Protocol[Handle]):
    """The part of ``pynvml`` the reader calls, by pynvml's names: the module, or a fake. Each call
    blocks well under a millisecond and raises ``NVMLError`` (one subclass per NVML code)."""

    @property
    def NVMLError(self) -> type[Exception]: ...
    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int, /) -> Handle: ...
    def nvmlDeviceGetName(self, handle: Handle, /) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Handle, /) -> MemoryInfo: ...
    def nvmlDeviceGetPowerUsage(self, handle: Handle, /) -> int: ...
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Handle, /) -> int: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Handle, /) -> Utilization: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Handle, /) -> Sequence[ProcessInfo]: ...
    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Handle, /) -> Sequence[ProcessInfo]: ...


def process_name(pid: int) -> str:
    """The name of a local process, or ``pid N`` when it is gone, hidden or in another namespace."""
    try:
        return str(psutil.Process(pid).name())
    except (psutil.Error, OSError):
        return f"pid {pid}"


class NvmlReader(Generic[Handle]):
    """Reads every NVIDIA device: name, memory (MiB) and the processes holding memory.

    ``read`` blocks for a few NVML calls (well under a millisecond each) and never raises: a
    missing library, driver or permission yields ``((), sentence)``.
    """

    source = "nvml"

    @overload
    def __init__(
        self: NvmlReader[object], nvml_module: None = None, name_of: Callable[[int], str] = process_name
    ) -> None: ...
    @overload
    def __init__(
        self, nvml_module: NvmlLibrary[Handle], name_of: Callable[[int], str] = process_name
    ) -> None: ...
    def __init__(
        self, nvml_module: NvmlLibrary[Handle] | None = None, name_of: Callable[[int], str] = process_name
    ) -> None:
        self._nvml = nvml_module
        self._name_of = name_of
        self._initialized = False

    def read(self) -> tuple[tuple[GpuDevice, ...], str]:
        try:
            nvml = self._module()
        except ImportError:
            return (), "no NVML: the nvidia-ml-py package (pynvml) is not installed"
        error_type: type[BaseException] = nvml.NVMLError
        if not self._initialized:
            try:
                nvml.nvmlInit()
            except error_type as exc:
                return (), _init_failure(exc)
            self._initialized = True
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except error_type as exc:
            return (), f"NVML could not count the GPUs: {_describe(exc)}"
        devices: list[GpuDevice] = []
        failures: list[str] = []
        for index in range(count):
            try:
                devices.append(self._device(nvml, index))
            except error_type as exc:
                failures.append(f"GPU {index} could not be read: {_describe(exc)}")
        if failures:
            return tuple(devices), "; ".join(failures)
        if not devices:
            return (), "no NVIDIA GPU: the driver is loaded but reports no devices"
        return tuple(devices), "ok"

    def close(self) -> None:
        """Release NVML (reads after this initialise it again)."""
        if self._initialized and self._nvml is not None:
            # Shutting down after a device was lost fails; there is nothing left to release then.
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._initialized = False

    def _module(self) -> NvmlLibrary[Handle]:
        if self._nvml is None:
            import pynvml

            self._nvml = pynvml
        return self._nvml

    def _device(self, nvml: NvmlLibrary[Handle], index: int) -> GpuDevice:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return GpuDevice(
            index=index,
            name=name.decode() if isinstance(name, bytes) else str(name),
            total_mib=int(memory.total) // MIB,
            used_mib=int(memory.used) // MIB,
            free_mib=int(memory.free) // MIB,
            processes=self._processes(nvml, handle),
            power_w=_optional(nvml.NVMLError, lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000),
            power_limit_w=_optional(
                nvml.NVMLError, lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
            ),
            util_pct=_optional(nvml.NVMLError, lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        )

    def _processes(self, nvml: NvmlLibrary[Handle], handle: Handle) -> tuple[GpuProcess, ...]:
        # A process may appear as both a compute and a graphics client; NVML then reports the
        # same allocation twice, so keep the larger figure once. ``usedGpuMemory`` is None
        # where the driver cannot attribute memory (Windows WDDM, some containers).
        used_by_pid: dict[int, int] = {}
        for query in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
            try:
                infos = query(handle)
            except nvml.NVMLError:
                continue  # not supported on this device or driver: the device totals still hold
            for info in infos:
                mib = int(info.usedGpuMemory or 0) // MIB
                used_by_pid[int(info.pid)] = max(used_by_pid.get(int(info.pid), 0), mib)
        return tuple(
            GpuProcess(pid=pid, name=self._name_of(pid), used_mib=mib)
            for pid, mib in sorted(used_by_pid.items())
        )


def _optional(error: type[Exception], read: Callable[[], float]) -> float | None:
    """A figure some devices do not report (NVML_ERROR_NOT_SUPPORTED on many consumer cards and
    in some containers): None then, never a failed reading of the whole device."""
    try:
        return float(read())
    except error:
        return None


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _init_failure(exc: BaseException) -> str:
    code = getattr(exc, "value", None)
    if code == NVML_ERROR_LIBRARY_NOT_FOUND:
        return f"no NVIDIA driver: {NVML_LIBRARY} not found"
    if code == NVML_ERROR_DRIVER_NOT_LOADED:
        return "no NVIDIA driver: the kernel driver is not loaded (NVML: Driver Not Loaded)"
    if code == NVML_ERROR_NO_PERMISSION:
        return "NVML refused access (No Permission): run stackd as a user allowed to open /dev/nvidia*"
    return f"NVML could not start: {_describe(exc)}"


__all__ = ["NvmlReader", "process_name"]
