"""Scripted GPUs (scenario files, a fixed total), host resources, and the probe that joins them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.errors import ConfigError
from stackd.hardware.host import read_host
from stackd.hardware.nvml import NvmlReader
from stackd.hardware.probe import make_gpu_reader, read_hardware
from stackd.hardware.scenario import FixedReader, ScenarioReader
from stackd.hardware.types import GpuDevice, GpuProcess
from tests.unit.conftest_planner import GPU_FIXTURES, ROOT, RTX5090, host


def test_rtx5090_windows_desktop_fixture() -> None:
    devices, state = ScenarioReader(RTX5090).read()
    assert state == "ok"
    (card,) = devices
    assert (card.index, card.name, card.total_mib) == (0, "NVIDIA GeForce RTX 5090", 32607)
    assert card.used_mib == 1792 + 412 + 640 + 256 == 3100
    assert card.free_mib == 32607 - 3100
    assert card.processes[0] == GpuProcess(1840, "dwm.exe", 1792)


@pytest.mark.parametrize("path", sorted(GPU_FIXTURES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_gpu_fixture_loads(path: Path) -> None:
    devices, _ = ScenarioReader(path).read()
    assert devices and all(d.used_mib + d.free_mib == d.total_mib for d in devices)


def test_the_readme_example_is_the_seed_fixture() -> None:
    example = ROOT / "config" / "examples" / "gpu-rtx5090.yaml"
    assert ScenarioReader(example).read() == ScenarioReader(RTX5090).read()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gpu.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "devices:\n  - name: a\n    totl_mib: 100\n",
            [":2: devices.0.total_mib: required key is missing", ":3: devices.0.totl_mib: unknown key"],
        ),
        (
            "devices:\n  - name: a\n    total_mib: 100\n    processes:\n      - {pid: 1, name: x, used_mib: -5}\n",
            [":5: devices.0.processes.0.used_mib: Input should be greater than or equal to 0"],
        ),
        ("devices:\n  - name: a\n    total_mib: [\n", [":4: invalid YAML"]),
        (
            "devices:\n  - name: a\n    total_mib: 100\n    processes:\n      - {pid: 1, name: x, used_mib: 150}\n",
            [":4: devices.0.processes: processes hold 150 MiB but total_mib is 100"],
        ),
        ("", [":1: (file): Input should be a valid dictionary"]),
    ],
)
def test_a_bad_scenario_names_file_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        ScenarioReader(path)
    problems = caught.value.problems
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected, strict=True):
        assert str(problem).startswith(f"{path}{fragment}")


def test_a_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the GPU scenario"):
        ScenarioReader(tmp_path / "nope.yaml")


def test_a_scenario_without_devices_reads_as_no_gpu(tmp_path: Path) -> None:
    path = write(tmp_path, "devices: []\n")
    assert ScenarioReader(path).read() == ((), f"no GPU in scenario {path}")


def test_fixed_total() -> None:
    devices, state = FixedReader(16).read()
    assert state == "ok"
    assert devices == (GpuDevice(0, "fixed 16GB", 16384, 0, 16384),)
    assert FixedReader(23.5).read()[0][0].total_mib == 24064


def test_fixed_total_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="greater than 0"):
        FixedReader(0)


def test_reader_choice_scenario_then_fixed_then_nvml() -> None:
    assert isinstance(make_gpu_reader(str(RTX5090), 16), ScenarioReader)
    assert isinstance(make_gpu_reader(None, 16), FixedReader)
    assert isinstance(make_gpu_reader(None, None), NvmlReader)


def test_snapshot_of_a_scenario_is_simulated() -> None:
    snap = read_hardware(ScenarioReader(RTX5090), host=lambda: host(available_gib=90))
    assert snap.gpu_source == f"scenario:{RTX5090}"
    assert snap.simulated
    assert snap.gpu(0) is not None and snap.gpu(1) is None
    assert (snap.ram_total_mib, snap.ram_available_mib, snap.cpu_count) == (131072, 92160, 32)


class NoGpu:
    source = "nvml"

    def read(self) -> tuple[tuple[GpuDevice, ...], str]:
        return (), "no NVIDIA driver: libnvidia-ml.so.1 not found"


def test_snapshot_without_a_gpu_says_why() -> None:
    snap = read_hardware(NoGpu(), host=host)
    assert snap.gpus == ()
    assert snap.gpu_source == "none"
    assert snap.gpu_state == "no NVIDIA driver: libnvidia-ml.so.1 not found"


def test_real_host_resources() -> None:
    resources = read_host()
    assert 0 < resources.ram_available_mib <= resources.ram_total_mib
    assert resources.cpu_count >= 1
