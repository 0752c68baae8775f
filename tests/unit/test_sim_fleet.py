"""``fleet_for``: the simulators a config needs, read from its Ollama URL and remote endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.config.loader import load_config
from stackd.config.models import StacksConfig
from stackd.errors import ConfigError
from stackd.sim.fleet import SimSpec, fleet_for

ROOT = Path(__file__).resolve().parents[2]


def demo(env: dict[str, str] | None = None) -> StacksConfig:
    return load_config(ROOT / "config" / "examples" / "demo.yaml", env or {})


def test_the_demo_needs_ollama_on_11434_and_the_four_cloud_simulators_on_8300_to_8303() -> None:
    fleet = fleet_for(demo())
    assert fleet.sims == (
        SimSpec("openai", "127.0.0.1", 8300, ("deepseek-r1-cloud",), ("deepseek-r1:14b",)),
        SimSpec("openai", "127.0.0.1", 8301, ("mirothinker-cloud",), ("mirothinker-1.7-mini",)),
        SimSpec("gemini", "127.0.0.1", 8302, ("gemini-flash",), ("gemini-2.5-flash",)),
        SimSpec("anthropic", "127.0.0.1", 8303, ("claude-sonnet",), ("claude-sonnet-4-5",)),
        SimSpec("ollama", "127.0.0.1", 11434, ("ollama.url",)),
    )
    assert fleet.skipped == ()


def test_ollama_host_moves_the_ollama_simulator() -> None:
    fleet = fleet_for(demo({"OLLAMA_HOST": "http://localhost:12000"}))
    assert SimSpec("ollama", "127.0.0.1", 12000, ("ollama.url",)) in fleet.sims


def test_an_endpoint_off_loopback_is_never_simulated_and_says_so() -> None:
    fleet = fleet_for(load_config(ROOT / "config" / "model-stacks.yaml", {}))
    assert [s.port for s in fleet.sims] == [8300, 8301, 11434]
    assert any(
        line.startswith("gemini-flash: https://generativelanguage.googleapis.com")
        and "never simulated" in line
        for line in fleet.skipped
    ), fleet.skipped


def test_two_protocols_on_one_port_are_refused_with_both_names() -> None:
    config = demo()
    models = dict(config.models)
    models["claude-sonnet"] = models["claude-sonnet"].model_copy(update={"endpoint": "http://127.0.0.1:8300"})
    with pytest.raises(
        ConfigError,
        match=r"deepseek-r1-cloud speaks openai on port 8300, where claude-sonnet speaks anthropic; "
        r"one simulator serves one protocol",
    ):
        fleet_for(config.model_copy(update={"models": models}))
