"""The README's demo as a newcomer pastes it: ``stackd serve --state-dir DIR &``, then CLI commands
with no token and no state dir in the environment. The CLI asks the daemon it reached for its
state dir, reads its token there, and names that daemon in ``stackd status``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Daemon, run_cli


@pytest.fixture(scope="module")
def daemon(module_daemon: Daemon) -> Daemon:
    """One daemon for the module (issue 25): every test here reads it or dry-runs a switch; the
    last one's real switch fails (no Docker engine) and rolls back."""
    return module_daemon


def newcomer_env(daemon: Daemon, tmp_path: Path) -> dict[str, str]:
    """A shell with the daemon's URL only; the default state dir is an empty one."""
    env = {k: v for k, v in os.environ.items() if k not in ("STACKD_TOKEN", "STACKD_STATE_DIR")}
    (tmp_path / "xdg-state").mkdir()
    return {**env, "STACKD_URL": daemon.url, "XDG_STATE_HOME": str(tmp_path / "xdg-state"), "COLUMNS": "80"}


def test_a_switch_finds_the_token_through_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    result = run_cli("switch", "elastic-hybrid", "--dry-run", "--json", env=newcomer_env(daemon, tmp_path))
    assert result.returncode == 0, result.stderr


def test_a_refused_token_names_the_daemon_and_where_the_token_came_from(
    daemon: Daemon, tmp_path: Path
) -> None:
    env = newcomer_env(daemon, tmp_path)
    result = run_cli("switch", "elastic-hybrid", "--dry-run", "--token", "wrong", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"TokenRefused: the daemon at {daemon.url} refused the token read from --token (it reads its own "
        f"from {daemon.state_dir / 'token'}); pass --token or --state-dir of that daemon"
    ]
    elsewhere = tmp_path / "another-daemon"
    elsewhere.mkdir()
    (elsewhere / "token").write_text("another-token\n")
    result = run_cli("lease", "list", "--state-dir", str(elsewhere), env={**env, "STACKD_TOKEN": "x"})
    assert result.returncode == 0, result.stderr  # a read: no token needed on loopback
    result = run_cli("switch", "elastic-hybrid", "--dry-run", "--state-dir", str(elsewhere), env=env)
    assert f"refused the token read from {elsewhere / 'token'}" in result.stderr


def test_status_names_the_daemon_and_fits_80_columns(daemon: Daemon, tmp_path: Path) -> None:
    result = run_cli("status", env=newcomer_env(daemon, tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"daemon {daemon.url}  pid {daemon.proc.pid}")
    unwrapped = "".join(lines)  # a long path is folded at 80 columns, never cut
    assert f"config {ROOT / 'config/model-stacks.yaml'}state dir {daemon.state_dir}" in unwrapped
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout


def test_a_switch_says_first_which_daemon_it_changes(daemon: Daemon, tmp_path: Path) -> None:
    result = run_cli("switch", "cloud-offload", env={**newcomer_env(daemon, tmp_path), "COLUMNS": "300"})
    assert result.returncode == 1, result.stderr  # no Docker engine here: the switch rolls back
    assert result.stdout.splitlines()[0] == (
        f"daemon {daemon.url}  config {ROOT / 'config/model-stacks.yaml'}  state dir {daemon.state_dir}"
    )
    assert "Traceback" not in result.stdout + result.stderr
