"""The CLI starts quickly: what ``import stackd.cli.main`` loads is held to a budget.

Every ``stackd`` command pays for the import of the entry point before it does anything; it
cost 0.5 s on an idle machine when it loaded FastAPI's answer models, the config models and
httpx. Commands import what they need inside themselves. ``-X importtime`` reports each
module's own import time; the budget is on their sum (the best of three runs, so that a loaded
machine does not fail it: it measured ~0.1 s under a load of 5 on 2 cores, against ~1-2 s before).
``bench/cli_startup.py`` times the commands themselves (docs/benchmarks.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUDGET_MS = 300

# Modules only the daemon (or a command that plans offline) needs: never at the CLI's start.
DAEMON_ONLY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "docker",
    "psutil",
    "sqlite3",
    "stackd.api.app",
    "stackd.api.gateway",
    "stackd.daemon",
    "stackd.services",
    "stackd.manager",
    "stackd.drivers",
    "stackd.router",
    "stackd.state",
    "stackd.config.models",
    "stackd.planner.switch",
)
# ... nor what only a command that talks to a daemon needs.
CLIENT_ONLY = ("httpx", "pydantic", "stackd.api.answers", "stackd.cli.client", "importlib.metadata")


def import_times(statement: str) -> dict[str, int]:
    """Module -> its own import time in µs, as ``python -X importtime -c STATEMENT`` reports it."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    found: dict[str, int] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)", line)
        if match:
            found[match.group(3)] = int(match.group(1))
    assert found, done.stderr[-2000:]
    return found


def loaded(times: dict[str, int], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in times if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_the_entry_point_imports_within_its_budget() -> None:
    runs = [import_times("import stackd.cli.main") for _ in range(3)]
    best_ms = min(sum(times.values()) for times in runs) / 1000
    assert best_ms < BUDGET_MS, f"import stackd.cli.main: {best_ms:.0f} ms of imports (budget {BUDGET_MS})"


def test_the_entry_point_loads_no_daemon_or_client_module() -> None:
    times = import_times("import stackd.cli.main")
    assert loaded(times, DAEMON_ONLY + CLIENT_ONLY) == []


def test_a_status_call_loads_no_daemon_module() -> None:
    """What ``stackd status`` imports to ask, check and render an answer: no FastAPI, no config
    models, no daemon (the answers' models are pydantic, built on first use)."""
    times = import_times(
        "import stackd.cli.main, stackd.cli.client, stackd.api.answers, stackd.cli.render, "
        "stackd.cli.switch_view, stackd.cli.ps_view"
    )
    assert "httpx" in times and "stackd.api.answers" in times  # the check can see these
    assert loaded(times, DAEMON_ONLY) == []


def test_the_budget_check_would_see_a_daemon_import() -> None:
    times = import_times("import stackd.cli.main, stackd.api.app")
    assert "fastapi" in loaded(times, DAEMON_ONLY)


def test_version_is_the_packages_version() -> None:
    """``--version`` prints ``stackd.__version__`` (no metadata lookup): it is pyproject's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    done = subprocess.run(
        [sys.executable, "-m", "stackd.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert done.stdout == f"stackd {project['version']}\n"
