"""The README's first steps, as a new user runs them."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import ROOT, Daemon, run_cli


@pytest.fixture(scope="module")
def daemon(module_daemon: Daemon) -> Daemon:
    """One daemon for the module (issue 25): every test here reads it or dry-runs a switch."""
    return module_daemon


def test_lists_the_seed_stacks_and_the_embedded_ones(daemon: Daemon) -> None:
    result = daemon.cli("stacks", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [s["name"] for s in data["stacks"]] == [
        "cloud-offload",
        "elastic-hybrid",
        "ollama-hybrid",
        "ollama-only",
        "embedded",
        "embedded-long",
    ]
    assert data["default"] == "cloud-offload"


def test_dry_run_elastic_hybrid_shows_steps_and_vram_ledger(daemon: Daemon) -> None:
    result = daemon.cli("switch", "elastic-hybrid", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert plan["feasible"] is True
    kinds = [s["kind"] for s in plan["steps"]]
    assert "bind_role" in kinds
    assert {"stack", "steps", "vram", "ram"} <= plan.keys()
    vram = plan["vram"]
    assert vram["always_on_mib"] == 14 * 1024  # orchestrator 13 GiB + embeddings 1 GiB
    assert vram["swap_budget_mib"] == 12 * 1024  # FLUX, the larger of the gpu-creative swap group
    assert vram["simulated"] is True
    # the table rendering works too
    table = daemon.cli("switch", "elastic-hybrid", "--dry-run")
    assert table.returncode == 0 and "VRAM ledger" in table.stdout


def test_switch_needs_the_token(daemon: Daemon) -> None:
    body = {"stack": "elastic-hybrid", "dry_run": True}
    assert httpx.post(f"{daemon.url}/model-stacks/switch", json=body).status_code == 401
    ok = httpx.post(
        f"{daemon.url}/model-stacks/switch", json=body, headers={"Authorization": f"Bearer {daemon.token}"}
    )
    assert ok.status_code == 200
    assert (daemon.state_dir / "token").stat().st_mode & 0o777 == 0o600


def test_offline_plan_on_16_and_32_gb() -> None:
    small = run_cli("plan", "elastic-hybrid", "--gpu-total-gb", "16", "--json")
    assert small.returncode == 2
    data = json.loads(small.stdout)
    assert data["feasible"] is False and data["refusals"][0]["message"]
    big = run_cli("plan", "elastic-hybrid", "--gpu-total-gb", "32", "--json")
    assert big.returncode == 0, big.stderr
    assert json.loads(big.stdout)["feasible"] is True


def test_cli_without_daemon_prints_one_line(tmp_path) -> None:
    import os

    from tests.e2e.conftest import free_port

    env = {**os.environ, "STACKD_URL": f"http://127.0.0.1:{free_port()}"}
    result = run_cli("status", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no stackd daemon at" in lines[0]


def test_config_check_reports_file_line_field(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bundled = (ROOT / "config/model-stacks.yaml").read_text()
    bad.write_text(bundled.replace("reserve_gb: 3", "reserve_gbb: 3"))
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 1
    assert (
        f"{bad}:" in result.stderr and "gpu.reserve_gbb" in result.stderr and "unknown key" in result.stderr
    )


def test_status_and_metrics_show_the_gpu(daemon: Daemon) -> None:
    status = daemon.cli("status")
    assert status.returncode == 0, status.stderr
    assert "NVIDIA GeForce RTX 5090" in status.stdout and "(simulated)" in status.stdout
    assert "recovery at start" in status.stdout  # the failed first switch is reported, not hidden
    metrics = httpx.get(f"{daemon.url}/metrics").text
    assert 'stackd_stack_active{stack="elastic-hybrid"} 0.0' in metrics
    gpu_total = next(
        line for line in metrics.splitlines() if line.startswith("stackd_gpu_memory_total_bytes{")
    )
    assert 'name="NVIDIA GeForce RTX 5090"' in gpu_total
    assert float(gpu_total.rsplit(" ", 1)[1]) == 32607 * 1024 * 1024
