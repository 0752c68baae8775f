"""Usage errors of the ``stackd`` console script: a usage line and exit 2, never a traceback.

These run the installed entry point as a user does, because the bug they guard against lived
between typer and ``main()``: typer 0.26+ raises the exceptions of the click it bundles, which a
``main()`` catching ``click``'s own classes let through as a traceback. Every command here fails
while parsing its arguments, so no daemon is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from stackd.cli.main import app

SCRIPT = Path(sys.executable).with_name("stackd")
STACKD = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "stackd.cli"]


def run_stackd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "STACKD_URL": "http://127.0.0.1:9"}  # port 9: nothing listens
    return subprocess.run([*STACKD, *args], env=env, text=True, capture_output=True, timeout=60)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["lease"],
        ["config"],
        ["switch"],
        ["reason", "x", "--effort", "11"],
        ["status", "--jsn"],
        ["plan", "x", "--gpu-total-gb", "abc"],
    ],
    ids=" ".join,
)
def test_a_usage_error_prints_one_usage_line_and_exits_2(args: list[str]) -> None:
    result = run_stackd(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    usage = [line for line in output.splitlines() if line.strip().startswith("Usage:")]
    assert len(usage) == 1, output


@pytest.mark.parametrize(
    "args, message",
    [
        (["switch"], "Missing argument"),
        (["reason", "x", "--effort", "11"], "--effort"),
        (["status", "--jsn"], "No such option: --jsn"),
        (["plan", "x", "--gpu-total-gb", "abc"], "--gpu-total-gb"),
        (["serve", "--port", "0"], "--port"),  # was a pydantic traceback from the daemon
    ],
)
def test_a_usage_error_goes_to_stderr_naming_what_is_wrong(args: list[str], message: str) -> None:
    result = run_stackd(*args)
    assert result.stdout == ""
    assert result.stderr.lstrip().startswith("Usage: stackd")
    assert message in result.stderr


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = run_stackd("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"stackd {version('stackd')}"


def test_serve_takes_periodic_and_no_periodic() -> None:
    serve = get_command(app).commands["serve"]  # type: ignore[attr-defined]
    option = next(p for p in serve.params if p.name == "periodic")
    assert option.opts == ["--periodic"] and option.secondary_opts == ["--no-periodic"]
    assert option.default is True
    assert {p.name for p in serve.params} >= {"state_dir", "config", "host", "port"}


def commands(command: object, path: str = "stackd") -> list[tuple[str, object]]:
    found = [(path, command)]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found += commands(sub, f"{path} {name}")
    return found


def test_every_option_and_argument_of_every_command_has_help() -> None:
    missing = [
        f"{path} {param.name}"
        for path, command in commands(get_command(app))
        for param in getattr(command, "params", [])
        if not getattr(param, "help", None)
    ]
    assert missing == []


def test_every_command_that_talks_to_a_daemon_takes_url_token_and_state_dir() -> None:
    offline = {"stackd serve", "stackd plan", "stackd sim", "stackd config check", "stackd config schema"}
    signals = {"stackd stop"}  # signals the daemon of a state dir: no token, no API call that needs one
    for path, command in commands(get_command(app)):
        if isinstance(command, typer.core.TyperGroup) or path in offline:
            continue
        names = {p.name for p in command.params}  # type: ignore[attr-defined]
        wanted = {"url", "state_dir"} if path in signals else {"url", "token", "state_dir"}
        assert wanted <= names, path
