"""GPU power and energy without a GPU: a scripted scenario's power figures reach /status,
/metrics (``stackd_gpu_power_watts``, the counter ``stackd_gpu_energy_joules_total``), ``stackd
status``'s lines and, integrated per stack from the power sampler's readings, ``/usage``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from stackd.api.app import create_app
from stackd.api.metrics import register_stack_metrics
from stackd.cli.schedule_commands import status_lines
from stackd.hardware.energy import EnergyMeter
from stackd.hardware.probe import read_hardware
from stackd.hardware.scenario import ScenarioReader
from stackd.hardware.types import GpuDevice
from stackd.manager.energy import PowerSampler
from stackd.settings import Settings
from stackd.state.energy import EnergyStore
from tests.fake_clock import FakeClock
from tests.unit.test_manager_world import World, close_all, make_world

TOKEN = "power-energy-test-token-0123456789abcdef"
SCENARIO = """\
devices:
  - name: NVIDIA GeForce RTX 5090
    total_mib: 32607
    power_w: 300
    power_limit_w: 575
    util_pct: 40
    processes:
      - {pid: 1840, name: dwm.exe, used_mib: 3072}
"""


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    scenario = tmp_path / "rtx5090-busy.yaml"
    scenario.write_text(SCENARIO)
    w = make_world(tmp_path)
    w.hardware = read_hardware(ScenarioReader(scenario))
    yield w
    await close_all(w)


def device(watts: float | None) -> GpuDevice:
    return GpuDevice(0, "card", 1000, 0, 1000, power_w=watts)


def test_energy_is_the_draw_at_each_period_s_start_charged_to_the_stack_then() -> None:
    meter = EnergyMeter(max_gap_s=60)
    assert meter.sample(0, "day", [device(200)]) == {}
    assert meter.sample(10, "day", [device(300)]) == {"day": 2000.0}
    assert meter.sample(20, "night", [device(100)]) == {"day": 3000.0}  # the period ran on "day"
    assert meter.sample(30, "night", [device(None)]) == {"night": 1000.0}
    assert meter.sample(40, "night", [device(100)]) == {}  # no reading, no energy invented
    assert meter.sample(1000, "night", [device(100)]) == {}  # a 960 s gap is not integrated
    assert meter.joules_by_gpu == {0: 6000.0} and meter.joules_by_stack == {"day": 5000.0, "night": 1000.0}


async def test_a_scripted_scenario_s_power_reaches_status_metrics_and_usage(
    world: World, tmp_path: Path
) -> None:
    manager = world.manager()
    assert await (await manager.submit_switch("cloud-offload")).wait() == "succeeded"
    clock = FakeClock(1_800_000_000.0)
    sampler = PowerSampler(manager, EnergyStore(world.db), clock=clock)
    for _ in range(3):  # 0, 10 and 20 s: two periods of 10 s at 300 W
        await sampler.sample()
        clock.now += 10
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, power=sampler)
    registry = CollectorRegistry()
    register_stack_metrics(registry, services)
    app = create_app(services, registry=registry)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://x", headers=headers
    ) as c:
        metrics = (await c.get("/metrics")).text
        status = (await c.get("/status")).json()
        usage = (await c.get("/usage")).json()
    labels = '{gpu="0",name="NVIDIA GeForce RTX 5090"}'
    assert f"stackd_gpu_power_watts{labels} 300.0" in metrics
    assert f"stackd_gpu_power_limit_watts{labels} 575.0" in metrics
    assert f"stackd_gpu_utilization_ratio{labels} 0.4" in metrics
    assert f"stackd_gpu_energy_joules_total{labels} 6000.0" in metrics
    assert 'stackd_stack_energy_joules_total{stack="cloud-offload"} 6000.0' in metrics
    gpu = status["gpu"]["devices"][0]
    assert (gpu["power_w"], gpu["power_limit_w"], gpu["util_pct"]) == (300.0, 575.0, 40.0)
    assert str(status_lines(status)[0]) == "GPU 0 power: 300 W of 575 W, 40% busy"
    assert usage["energy"] == [
        {"stack": "cloud-offload", "wh": round(6000 / 3600, 3), "since": clock.now - 20}
    ]
