"""What a ``runtime: process`` engine is started as: its argv, environment, working directory and
endpoint, with the ``${PORT}``, ``${PYTHON}``, ``${STATE_DIR}`` and ``${MODEL_PATH}`` macros
filled in; its spawn. When to start one is the member's decision (``stackd.drivers.process``)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stackd.config.models import Model, Placement, ProcessRuntime
from stackd.drivers import process_group as pg
from stackd.drivers.container_env import in_container, missing_package_hint
from stackd.drivers.model_packages import ModelPackageMissing, ensure_model_file
from stackd.drivers.process_engine import Engine
from stackd.errors import DriverFailed
from stackd.state.processes import ProcessRecord


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    endpoint: str


@dataclass(frozen=True)
class LaunchContext:
    """What the driver gives every engine it starts."""

    state_dir: Path
    python: str
    owner: str  # stamped into the engine's environment, so that a stray can be found later
    gpu_device: int
    withheld_env: frozenset[str]


def plan_launch(
    ctx: LaunchContext, name: str, model: Model, runtime: ProcessRuntime, port: int, model_path: Path | None
) -> Launch:
    macros = {"PORT": str(port), "PYTHON": ctx.python, "STATE_DIR": str(ctx.state_dir)}
    if model_path is not None:
        macros["MODEL_PATH"] = str(model_path)
    inherited = {k: v for k, v in os.environ.items() if k not in ctx.withheld_env}
    env = {
        **inherited,
        **{k: fill(v, macros) for k, v in runtime.env.items()},
        pg.OWNER_ENV: ctx.owner,
        pg.MEMBER_ENV: name,
    }
    if model.placement == Placement.gpu:
        env.setdefault("CUDA_VISIBLE_DEVICES", str(ctx.gpu_device))
    return Launch(
        argv=[fill(arg, macros) for arg in runtime.command],
        env=env,
        cwd=Path(fill(runtime.cwd, macros)) if runtime.cwd else ctx.state_dir,
        endpoint=fill(model.endpoint or "http://127.0.0.1:${PORT}/v1", macros),
    )


def model_file(state_dir: Path, name: str, runtime: ProcessRuntime) -> Path:
    """The GGUF of ``process.model_package`` (blocks: call it in a worker thread)."""
    package = runtime.model_package
    assert package is not None
    try:
        return ensure_model_file(state_dir, package)
    except ModelPackageMissing as exc:
        raise DriverFailed(
            f"process member '{name}' needs the Python package {package}, which is not "
            f"installed; {missing_package_hint(package, in_container())}",
            model=name,
        ) from exc


def fill(text: str, macros: Mapping[str, str]) -> str:
    for key, value in macros.items():
        text = text.replace("${" + key + "}", value)
    return text


async def spawn_engine(name: str, launch: Launch, port: int, digest: str, log_path: Path) -> Engine:
    """Spawn the engine in its own process group, its output appended to ``log_path``; its record
    (not yet journalled: the caller writes it before waiting on the engine)."""
    try:
        proc = await pg.spawn(launch.argv, launch.env, launch.cwd, log_path)
    except OSError as exc:
        raise DriverFailed(
            f"process member '{name}' could not start {launch.argv[0]!r}: "
            f"{exc.strerror or exc}; check process.command",
            model=name,
        ) from exc
    started = pg.create_time(proc.pid) or time.time()
    argv = tuple(launch.argv)
    record = ProcessRecord(
        name, proc.pid, started, port, launch.endpoint, argv, digest, str(log_path), time.time()
    )
    return Engine(record, proc)
