"""Pytest fixtures that start the simulators over loopback; import them into a test module.

    from tests.sim_fixtures import openai_sim, ollama_sim  # noqa: F401  (fixtures)

Each fixture yields a started simulator with a fresh ``SimControl`` (no fault, no latency, no
key) and stops it afterwards. Tests change ``sim.control`` or ``await sim.set_fault(...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stackd.sim import AnthropicSim, GeminiSim, OllamaSim, OpenAISim

SIM_PULLED = {"llama3.2:3b": 2_000_000_000}
SIM_REGISTRY = {"llama3.2:3b": 2_000_000_000, "qwen3:8b": 5_000_000_000}


@pytest.fixture
async def openai_sim() -> AsyncIterator[OpenAISim]:
    async with OpenAISim() as sim:
        yield sim


@pytest.fixture
async def anthropic_sim() -> AsyncIterator[AnthropicSim]:
    async with AnthropicSim() as sim:
        yield sim


@pytest.fixture
async def gemini_sim() -> AsyncIterator[GeminiSim]:
    async with GeminiSim() as sim:
        yield sim


@pytest.fixture
async def ollama_sim() -> AsyncIterator[OllamaSim]:
    """Ollama with ``llama3.2:3b`` pulled; its registry also offers ``qwen3:8b``."""
    async with OllamaSim(pulled=SIM_PULLED, registry=SIM_REGISTRY) as sim:
        yield sim
