"""Shared builders for the planner and hardware tests (imported, not a pytest conftest).

The seed machine is ``rtx5090_32g_windows_desktop``: the blog's RTX 5090 with the Windows
desktop holding about 3 GB, and 128 GB of host RAM of which 100 GiB are available.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stackd.config.loader import load_config
from stackd.config.models import StacksConfig
from stackd.hardware.host import HostResources
from stackd.hardware.probe import read_hardware
from stackd.hardware.scenario import FixedReader, ScenarioReader
from stackd.hardware.types import GpuReader, HardwareSnapshot

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_CONFIG = ROOT / "config" / "model-stacks.yaml"
GPU_FIXTURES = ROOT / "tests" / "fixtures" / "gpu"
RTX5090 = GPU_FIXTURES / "rtx5090_32g_windows_desktop.yaml"
GIB = 1024


def bundled_config() -> StacksConfig:
    """The bundled config with every ${VAR:-default} at its default (no environment leaks in)."""
    return load_config(BUNDLED_CONFIG, env={})


def host(available_gib: float = 100, total_gib: float = 128, cpus: int = 32) -> HostResources:
    return HostResources(round(total_gib * GIB), round(available_gib * GIB), cpus)


def snapshot(reader: GpuReader, available_gib: float = 100) -> HardwareSnapshot:
    return read_hardware(reader, host=lambda: host(available_gib))


def rtx5090(available_gib: float = 100) -> HardwareSnapshot:
    return snapshot(ScenarioReader(RTX5090), available_gib)


def fixed(total_gb: float) -> HardwareSnapshot:
    return snapshot(FixedReader(total_gb))


def gpu_model(container: str, gb: float, **extra: Any) -> dict[str, Any]:
    """A docker model on the GPU, as the YAML file would write it."""
    return {
        "runtime": "docker",
        "placement": "gpu",
        "api": "openai",
        "endpoint": "http://127.0.0.1:9000/v1",
        "memory_gb": gb,
        "docker": {"container": container},
        **extra,
    }


def cpu_model(tag: str, gb: float, **extra: Any) -> dict[str, Any]:
    """An Ollama model kept on the CPU (num_gpu: 0)."""
    return {
        "runtime": "ollama",
        "placement": "cpu",
        "api": "ollama",
        "memory_gb": gb,
        "ollama": {"tag": tag, "options": {"num_gpu": 0}},
        **extra,
    }


def small_config(
    models: dict[str, Any],
    stacks: dict[str, dict[str, Any]],
    *,
    reserve_gb: float = 0,
    total_gb: float | None = None,
    required_orchestrator: bool = True,
) -> StacksConfig:
    roles = {role for stack in stacks.values() for role in stack.get("roles", {})}
    return StacksConfig.model_validate(
        {
            "default_stack": next(iter(stacks)),
            "gpu": {"reserve_gb": reserve_gb, **({"total_gb": total_gb} if total_gb else {})},
            "roles": {
                role: {"required": required_orchestrator and role == "orchestrator"} for role in sorted(roles)
            },
            "models": models,
            "stacks": stacks,
        }
    )
