"""A world for slice routing tests: the bundled config's elastic preset with a routing of the
test's choosing, and a scripted ChatRouter whose slices answer what each test says."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stackd.config.loader import load_config
from stackd.config.models import StacksConfig
from stackd.config.slices import SliceRouting
from stackd.errors import AllStrategiesFailed
from stackd.router.routes import Route, Target
from stackd.router.slices import SliceRouter
from stackd.router.types import Answer, ChatRequest, Usage

BUNDLED = Path(__file__).resolve().parents[2] / "config" / "model-stacks.yaml"
MODEL_SLICE = {"elastic-6b": "6b", "elastic-9b": "9b", "elastic-12b": "12b"}
Script = Callable[[str, ChatRequest], str | None]  # (slice, request) -> answer text, None: unavailable


def routing(**changes: Any) -> SliceRouting:
    base: dict[str, Any] = {
        "policy_version": "test-1",
        "order": ["6b", "9b", "12b"],
        "thresholds": {
            "9b": {"prompt_tokens": 100, "retrieved_chunks": 3, "tool_depth": 2, "effort": 6},
            "12b": {"prompt_tokens": 400, "retrieved_chunks": 6, "tool_depth": 4, "effort": 9},
        },
        "templates": {"compact": "COMPACT {schema}", "expressive": "EXPRESSIVE {schema}"},
        "settings": {
            "6b": {"template": "compact"},
            "9b": {"template": "compact"},
            "12b": {"template": "expressive"},
        },
    }
    base.update(changes)
    return SliceRouting.model_validate(base)


@functools.cache
def bundled() -> StacksConfig:
    return load_config(BUNDLED, env={})


class FixedDigests:
    """Digests without an Ollama to ask: ``sha256:digest-of-<model>``."""

    async def digest(self, model: str) -> str:
        return f"sha256:digest-of-{model}"


def config_with(slice_routing: SliceRouting) -> StacksConfig:
    config = bundled()
    preset = config.presets["elastic"].model_copy(update={"routing": slice_routing})
    return config.model_copy(update={"presets": {**config.presets, "elastic": preset}})


class ScriptedRouter:
    """A ChatRouter: ``script(slice, request)`` answers; every call is kept in ``calls``."""

    def __init__(self, config: StacksConfig, script: Script, tokens: int = 10) -> None:
        self.config = config
        self.script = script
        self.tokens = tokens
        self.calls: list[tuple[str, ChatRequest]] = []

    def preset_route(self, preset: str, slice_name: str | None = None) -> Route:
        assert slice_name is not None
        model = self.config.presets[preset].slices[slice_name]
        label = f"preset:{preset}:{slice_name}"
        return Route(label, (Target(label, model),))

    async def complete(self, route: Route, request: ChatRequest) -> Answer:
        model = route.targets[0].model
        assert model is not None
        slice_name = MODEL_SLICE[model]
        self.calls.append((slice_name, request))
        text = self.script(slice_name, request)
        if text is None:
            raise AllStrategiesFailed(f"{route.label}: model '{model}' is not in the active stack")
        return Answer(text, "stop", route.label, model, model, Usage(self.tokens, self.tokens))

    def slices_called(self) -> list[str]:
        return [s for s, _ in self.calls]


def world(
    script: Script, clock: Callable[[], float] = lambda: 1_764_547_200.0, **changes: Any
) -> tuple[SliceRouter, ScriptedRouter]:
    """(slice router, scripted router); the default clock is 2025-12-01 00:00 UTC."""
    scripted = ScriptedRouter(config_with(routing(**changes)), script)
    slices = SliceRouter(scripted, clock=clock, rng=lambda: 0.0)
    slices.digests = FixedDigests()
    return slices, scripted


def user(text: str = "hello") -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}])


PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
