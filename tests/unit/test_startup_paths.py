"""``stackd config check`` and ``stackd plan`` start without the daemon (issue 25 item 3).

A check of the bundled config once took 2.5-6.8 s on a loaded machine, the same for every
file: start-up, not checking. Both commands now import the CLI's entry point, the config package
(and, to plan, the planner and the hardware readers), never FastAPI, the daemon, the manager, the
router, the drivers or the state: ``bench/startup.py`` times them (docs/benchmarks.md, "Start-up").
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DAEMON = (
    "fastapi",
    "starlette",
    "uvicorn",
    "aiohttp",
    "httpx",
    "docker",
    "ollama",
    "mcp",
    "jsonschema",
    "prometheus_client",
    "sqlite3",
    "stackd.api",
    "stackd.daemon",
    "stackd.services",
    "stackd.manager",
    "stackd.router",
    "stackd.drivers",
    "stackd.state",
)


def imported_by(*argv: str) -> tuple[str, set[str]]:
    """The command's stdout and every module ``-X importtime`` saw it import."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stackd.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", done.stderr, re.M)}
    assert "stackd.cli.main" in modules, done.stderr[-2000:]
    return done.stdout, modules


def daemon_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in DAEMON))


def test_config_check_imports_the_config_package_and_nothing_of_the_daemon() -> None:
    out, modules = imported_by("config", "check", "config/model-stacks.yaml")
    assert out == "config/model-stacks.yaml: OK\n"
    assert "stackd.config.loader" in modules and "stackd.config.models" in modules
    assert daemon_modules(modules) == []
    assert not any(m.startswith("stackd.planner") for m in modules)


def test_an_offline_plan_imports_nothing_of_the_daemon() -> None:
    out, modules = imported_by("plan", "elastic-hybrid", "--gpu-scenario", "config/examples/gpu-rtx5090.yaml")
    assert "elastic-hybrid" in out
    assert "stackd.planner.plan" in modules and "stackd.hardware.scenario" in modules
    assert daemon_modules(modules) == []


def test_the_check_would_see_a_daemon_module() -> None:
    assert daemon_modules({"stackd.config.models", "fastapi.routing", "stackd.daemon"}) == [
        "fastapi.routing",
        "stackd.daemon",
    ]
