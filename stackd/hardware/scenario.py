"""Scripted GPUs: a scenario file (``--gpu-scenario FILE``) or a fixed total (``--gpu-total-gb N``).

They let the daemon, the CLI and the tests run the real planner on a machine without the card
it plans for. A scenario file describes devices and the foreign processes that hold memory::

    devices:
      - name: NVIDIA GeForce RTX 5090
        total_mib: 32607
        processes:
          - {pid: 1840, name: dwm.exe, used_mib: 1536}
        power_w: 85            # optional: draw, enforced limit (W) and utilisation (%), as NVML
        power_limit_w: 575
        util_pct: 3

``used`` is the sum of the processes and ``free`` is ``total - used``. The file is read and
checked once, when the reader is built, so a bad file stops the daemon at start with
``FILE:LINE: field: problem`` instead of surfacing later.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from stackd.config.yaml_source import parse_yaml
from stackd.errors import ConfigError
from stackd.hardware.types import GpuDevice, GpuProcess

MIB_PER_GIB = 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioProcess(_Strict):
    pid: int = Field(ge=0)
    name: str = Field(min_length=1)
    used_mib: int = Field(ge=0, description="GPU memory the process holds, in MiB.")


class ScenarioDevice(_Strict):
    name: str = Field(min_length=1)
    total_mib: int = Field(gt=0, description="Total memory of the device in MiB, as NVML reports it.")
    processes: list[ScenarioProcess] = Field(default_factory=list)
    power_w: float | None = Field(None, ge=0, le=5000, description="Power draw in watts, as NVML reports it.")
    power_limit_w: float | None = Field(None, gt=0, le=5000, description="Enforced power limit in watts.")
    util_pct: float | None = Field(None, ge=0, le=100, description="GPU utilisation in percent.")


class ScenarioFile(_Strict):
    devices: list[ScenarioDevice]


class ScenarioReader:
    """Replays the devices of a scenario file. Raises ``ConfigError`` at construction for a bad file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.source = f"scenario:{self.path}"
        self._devices = _load_devices(self.path)

    def read(self) -> tuple[tuple[GpuDevice, ...], str]:
        if not self._devices:
            return (), f"no GPU in scenario {self.path}"
        return self._devices, "ok"


class FixedReader:
    """One device of a given size and nothing on it: answers "what if my card had N GB"."""

    source = "fixed"

    def __init__(self, total_gb: float, index: int = 0) -> None:
        if total_gb <= 0:
            raise ConfigError(f"--gpu-total-gb must be greater than 0, got {total_gb:g}")
        total_mib = round(total_gb * MIB_PER_GIB)
        self._device = GpuDevice(
            index=index, name=f"fixed {total_gb:g}GB", total_mib=total_mib, used_mib=0, free_mib=total_mib
        )

    def read(self) -> tuple[tuple[GpuDevice, ...], str]:
        return (self._device,), "ok"


_SHAPE = (
    "a device has name, total_mib, processes and optionally power_w, power_limit_w, util_pct; "
    "a process has pid, name and used_mib"
)


def _problem_text(err: ErrorDetails) -> str:
    if err["type"] == "extra_forbidden":
        return f"unknown key; {_SHAPE}"
    if err["type"] == "missing":
        return f"required key is missing; {_SHAPE}"
    return str(err["msg"])


def _load_devices(path: Path) -> tuple[GpuDevice, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the GPU scenario: {exc.strerror or exc}") from exc
    try:
        document = parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        problem = f"{path}:{line}: invalid YAML: {exc.problem or exc}"
        raise ConfigError(problem, [problem]) from exc
    except (yaml.YAMLError, ValueError) as exc:
        problem = f"{path}:1: invalid YAML: {exc}"
        raise ConfigError(problem, [problem]) from exc
    try:
        scenario = ScenarioFile.model_validate(document.data)
    except ValidationError as exc:
        problems = [
            f"{path}:{document.line_of(tuple(err['loc']))}: "
            f"{'.'.join(str(part) for part in err['loc']) or '(file)'}: {_problem_text(err)}"
            for err in exc.errors()
        ]
        raise ConfigError(f"invalid GPU scenario {path}:\n  " + "\n  ".join(problems), problems) from exc
    devices = []
    for index, device in enumerate(scenario.devices):
        used = sum(p.used_mib for p in device.processes)
        if used > device.total_mib:
            line = document.line_of(("devices", index, "processes"))
            problem = (
                f"{path}:{line}: devices.{index}.processes: processes hold {used} MiB but total_mib "
                f"is {device.total_mib}; lower a used_mib or raise total_mib"
            )
            raise ConfigError(problem, [problem])
        devices.append(
            GpuDevice(
                index=index,
                name=device.name,
                total_mib=device.total_mib,
                used_mib=used,
                free_mib=device.total_mib - used,
                processes=tuple(GpuProcess(p.pid, p.name, p.used_mib) for p in device.processes),
                power_w=device.power_w,
                power_limit_w=device.power_limit_w,
                util_pct=device.util_pct,
            )
        )
    return tuple(devices)
