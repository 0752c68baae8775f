"""NvmlReader against a fake pynvml module (same functions, NVML-style errors) and the real one."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import psutil
import pytest

from stackd.hardware.nvml import NvmlReader, process_name
from stackd.hardware.types import GpuDevice, GpuProcess

MIB = 1024 * 1024


class FakeNVMLError(Exception):
    """pynvml.NVMLError's shape: the NVML return code in ``value``."""

    def __init__(self, value: int, text: str) -> None:
        super().__init__(text)
        self.value = value


LIBRARY_NOT_FOUND = FakeNVMLError(12, "NVML Shared Library Not Found")
DRIVER_NOT_LOADED = FakeNVMLError(9, "Driver Not Loaded")
NOT_SUPPORTED = FakeNVMLError(3, "Not Supported")
GPU_IS_LOST = FakeNVMLError(15, "GPU is lost")


@dataclass
class Proc:
    pid: int
    usedGpuMemory: int | None  # pynvml's field name


@dataclass
class Memory:
    total: int
    used: int
    free: int


@dataclass
class FakeGpu:
    name: str | bytes
    total_mib: int
    used_mib: int
    compute: list[Proc] | Exception = field(default_factory=list)
    graphics: list[Proc] | Exception = field(default_factory=list)
    lost: bool = False
    power_mw: int | Exception = NOT_SUPPORTED  # many consumer cards and containers do not say
    limit_mw: int | Exception = NOT_SUPPORTED
    util_pct: int | Exception = NOT_SUPPORTED


@dataclass
class Utilization:
    gpu: int  # pynvml's field names
    memory: int


def _or_raise(value: int | Exception) -> int:
    if isinstance(value, Exception):
        raise value
    return value


class FakeNvml:
    """The subset of pynvml that NvmlReader calls. Raises like the real library."""

    NVMLError = FakeNVMLError

    def __init__(self, gpus: list[FakeGpu], init_error: Exception | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0

    def nvmlInit(self) -> None:  # pynvml's names, kept so the fake is a drop-in
        self.init_calls += 1
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        gpu = self.gpus[index]
        if gpu.lost:
            raise GPU_IS_LOST
        return gpu

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str | bytes:
        return gpu.name

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> Memory:
        return Memory(gpu.total_mib * MIB, gpu.used_mib * MIB, (gpu.total_mib - gpu.used_mib) * MIB)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return _or_raise(gpu.power_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: FakeGpu) -> int:
        return _or_raise(gpu.limit_mw)

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> Utilization:
        return Utilization(_or_raise(gpu.util_pct), 0)

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[Proc]:
        if isinstance(gpu.compute, Exception):
            raise gpu.compute
        return gpu.compute

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu: FakeGpu) -> list[Proc]:
        if isinstance(gpu.graphics, Exception):
            raise gpu.graphics
        return gpu.graphics


def names(pid: int) -> str:
    return {4242: "vllm", 1840: "Xorg"}.get(pid, f"pid {pid}")


def test_reads_devices_memory_in_mib_and_processes_of_both_kinds() -> None:
    nvml = FakeNvml(
        [
            FakeGpu(
                b"NVIDIA GeForce RTX 5090",
                32607,
                16500,
                compute=[Proc(4242, 13_000 * MIB)],
                graphics=[Proc(1840, 900 * MIB), Proc(4242, 13_000 * MIB), Proc(77, None)],
            ),
            FakeGpu("NVIDIA H100 80GB HBM3", 81559, 0),
        ]
    )
    devices, state = NvmlReader(nvml, name_of=names).read()
    assert state == "ok"
    assert devices == (
        GpuDevice(
            0,
            "NVIDIA GeForce RTX 5090",
            32607,
            16500,
            16107,
            (
                GpuProcess(77, "pid 77", 0),  # usedGpuMemory None (WDDM): listed, holding 0 MiB
                GpuProcess(1840, "Xorg", 900),
                GpuProcess(4242, "vllm", 13_000),  # compute and graphics: counted once
            ),
        ),
        GpuDevice(1, "NVIDIA H100 80GB HBM3", 81559, 0, 81559, ()),
    )


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (LIBRARY_NOT_FOUND, "no NVIDIA driver: libnvidia-ml.so.1 not found"),
        (DRIVER_NOT_LOADED, "no NVIDIA driver: the kernel driver is not loaded (NVML: Driver Not Loaded)"),
    ],
)
def test_missing_driver_is_a_state_sentence_not_an_exception(error: Exception, sentence: str) -> None:
    if sys.platform == "win32":
        sentence = sentence.replace("libnvidia-ml.so.1", "nvml.dll")
    devices, state = NvmlReader(FakeNvml([], init_error=error)).read()
    assert devices == ()
    assert state == sentence


def test_missing_pynvml_package_is_a_state_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    devices, state = NvmlReader().read()
    assert devices == ()
    assert "nvidia-ml-py" in state


def test_unsupported_process_queries_keep_the_device() -> None:
    nvml = FakeNvml([FakeGpu("NVIDIA RTX A2000", 6138, 512, compute=NOT_SUPPORTED, graphics=NOT_SUPPORTED)])
    devices, state = NvmlReader(nvml, name_of=names).read()
    assert state == "ok"
    assert devices == (GpuDevice(0, "NVIDIA RTX A2000", 6138, 512, 5626, ()),)


def test_a_lost_device_is_reported_and_the_others_still_read() -> None:
    nvml = FakeNvml([FakeGpu("lost card", 1000, 0, lost=True), FakeGpu("good card", 2000, 100)])
    devices, state = NvmlReader(nvml, name_of=names).read()
    assert [d.name for d in devices] == ["good card"]
    assert state == "GPU 0 could not be read: GPU is lost"


def test_no_devices_behind_a_loaded_driver() -> None:
    devices, state = NvmlReader(FakeNvml([])).read()
    assert devices == ()
    assert state == "no NVIDIA GPU: the driver is loaded but reports no devices"


def test_initialises_once_and_close_shuts_down() -> None:
    nvml = FakeNvml([FakeGpu("card", 1000, 0)])
    reader = NvmlReader(nvml, name_of=names)
    reader.read()
    reader.read()
    assert (nvml.init_calls, nvml.shutdown_calls) == (1, 0)
    reader.close()
    assert nvml.shutdown_calls == 1


def test_a_failed_init_is_retried_on_the_next_read() -> None:
    # The driver may come up after the daemon (a module loaded late): the next read sees it.
    nvml = FakeNvml([FakeGpu("card", 1000, 0)], init_error=DRIVER_NOT_LOADED)
    reader = NvmlReader(nvml, name_of=names)
    assert reader.read()[0] == ()
    nvml.init_error = None
    assert [d.name for d in reader.read()[0]] == ["card"]


def test_real_nvml_never_raises() -> None:
    """The real pynvml: devices on a machine with a driver, a sentence without one."""
    reader = NvmlReader()
    try:
        devices, state = reader.read()
    finally:
        reader.close()
    if devices:
        assert state == "ok"
        assert all(0 <= d.used_mib <= d.total_mib for d in devices)
    else:
        assert "NVIDIA" in state or "NVML" in state


def test_process_name_of_a_live_and_of_a_missing_process() -> None:
    assert process_name(os.getpid()) == psutil.Process().name()
    assert process_name(2**22 + 12345) == f"pid {2**22 + 12345}"


def test_fake_matches_the_real_module_surface() -> None:
    """The fake must not drift from pynvml: every function the reader calls exists there."""
    pynvml = pytest.importorskip("pynvml")
    called = [n for n in vars(FakeNvml) if n.startswith("nvml")]
    assert called and all(callable(getattr(pynvml, n, None)) for n in called)
    assert issubclass(pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError)
    assert LIBRARY_NOT_FOUND.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND


def test_power_limit_and_utilisation_are_read_in_watts_and_absent_where_not_supported() -> None:
    busy = FakeGpu("NVIDIA GeForce RTX 5090", 32607, 20000, power_mw=412_345, limit_mw=575_000, util_pct=87)
    quiet = FakeGpu("NVIDIA T4", 15360, 0)  # NOT_SUPPORTED for all three
    devices, state = NvmlReader(FakeNvml([busy, quiet]), name_of=names).read()
    assert state == "ok"
    assert (devices[0].power_w, devices[0].power_limit_w, devices[0].util_pct) == (412.345, 575.0, 87.0)
    assert (devices[1].power_w, devices[1].power_limit_w, devices[1].util_pct) == (None, None, None)
