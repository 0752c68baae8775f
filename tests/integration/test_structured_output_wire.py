"""The answer's contract on the wire: ``response_format``, ``tools`` and ``tool_choice`` reach each
engine in its protocol's words (read back from what the simulators received), an engine's tool
calls come back in OpenAI's shape, and a backend that cannot honour the contract is skipped with
its reason: a route where none can is a 400, never unconstrained text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stackd.config.models import StacksConfig
from stackd.errors import AllStrategiesFailed, OutputUnsupported
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.backends import build_backend
from stackd.router.http_client import HttpClient
from stackd.router.routes import Route, Target
from stackd.router.types import ChatRequest, StreamFinish
from stackd.sim import AnthropicSim, GeminiSim, OllamaSim, OpenAISim

pytest_plugins = ["tests.sim_fixtures"]

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "sum", "schema": SCHEMA}}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What is 2+3?"}]


def config(sims: dict[str, str]) -> StacksConfig:
    """One model per protocol; ``llama`` is a llama-cpp-python process member."""
    models: dict[str, Any] = {
        "vllm": {
            "runtime": "remote",
            "placement": "cloud",
            "api": "openai",
            "endpoint": f"{sims['openai']}/v1",
            "remote": {},
        },
        "llama": {
            "runtime": "process",
            "placement": "cpu",
            "api": "openai",
            "memory_gb": 0.5,
            "process": {"command": ["${PYTHON}", "-m", "llama_cpp.server", "--port", "${PORT}"]},
        },
        "local": {
            "runtime": "ollama",
            "placement": "cpu",
            "api": "ollama",
            "ollama": {"tag": "llama3.2:3b", "options": {"num_gpu": 0, "num_ctx": 2048}},
        },
        "gemini": {
            "runtime": "remote",
            "placement": "cloud",
            "api": "gemini",
            "endpoint": f"{sims['gemini']}/v1beta",
            "remote": {},
        },
        "claude": {
            "runtime": "remote",
            "placement": "cloud",
            "api": "anthropic",
            "endpoint": sims["anthropic"],
            "remote": {},
        },
    }
    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "ollama": {"url": sims["ollama"]},
            "roles": {"orchestrator": {"required": True}},
            "models": models,
            "stacks": {"s": {"roles": {"orchestrator": "vllm"}, "members": ["local", "gemini", "claude"]}},
        }
    )


class World:
    def __init__(self, cfg: StacksConfig, client: HttpClient, sims: dict[str, Any]) -> None:
        self.config = cfg
        self.client = client
        self.sims = sims

    def backend(self, name: str, endpoint: str | None = None) -> Any:
        return build_backend(self.config, name, self.client, endpoint)

    def sent(self, sim: str, path_end: str) -> dict[str, Any]:
        body: dict[str, Any] = [r for r in self.sims[sim].requests if r.path.endswith(path_end)][-1].body
        return body


@pytest.fixture
async def world(
    openai_sim: OpenAISim, ollama_sim: OllamaSim, gemini_sim: GeminiSim, anthropic_sim: AnthropicSim
) -> AsyncIterator[World]:
    sims = {"openai": openai_sim, "ollama": ollama_sim, "gemini": gemini_sim, "anthropic": anthropic_sim}
    client = HttpClient(connect_s=5)
    yield World(config({k: s.url for k, s in sims.items()}), client, sims)
    await client.close()


async def test_openai_gets_response_format_tools_and_tool_choice_as_given(world: World) -> None:
    request = ChatRequest(ASK, response_format=JSON_SCHEMA, tools=[WEATHER], tool_choice=NAMED)
    await world.backend("vllm").complete(request)
    sent = world.sent("openai", "/chat/completions")
    assert (sent["response_format"], sent["tools"], sent["tool_choice"]) == (JSON_SCHEMA, [WEATHER], NAMED)
    async for _ in world.backend("vllm").stream(request):
        pass
    sent = world.sent("openai", "/chat/completions")
    assert sent["stream"] is True and sent["response_format"] == JSON_SCHEMA and sent["tool_choice"] == NAMED


async def test_a_plain_request_sends_no_contract(world: World) -> None:
    await world.backend("vllm").complete(ChatRequest(ASK))
    sent = world.sent("openai", "/chat/completions")
    assert not {"response_format", "tools", "tool_choice"} & sent.keys()


async def test_llama_cpp_python_gets_the_schema_as_json_object(world: World) -> None:
    # llama-cpp-python's server refuses type json_schema; {"type": "json_object", "schema"} is its grammar
    backend = world.backend("llama", f"{world.sims['openai'].url}/v1")
    await backend.complete(ChatRequest(ASK, response_format=JSON_SCHEMA))
    assert world.sent("openai", "/chat/completions")["response_format"] == {
        "type": "json_object",
        "schema": SCHEMA,
    }
    await backend.complete(ChatRequest(ASK, response_format={"type": "json_object"}))
    assert world.sent("openai", "/chat/completions")["response_format"] == {"type": "json_object"}


async def test_ollama_gets_format_and_tools(world: World) -> None:
    await world.backend("local").complete(ChatRequest(ASK, response_format=JSON_SCHEMA, tools=[WEATHER]))
    sent = world.sent("ollama", "/api/chat")
    assert sent["format"] == SCHEMA and sent["tools"] == [WEATHER]
    await world.backend("local").complete(ChatRequest(ASK, response_format={"type": "json_object"}))
    assert world.sent("ollama", "/api/chat")["format"] == "json"
    await world.backend("local").complete(ChatRequest(ASK, tools=[WEATHER], tool_choice="none"))
    assert not {"format", "tools"} & world.sent("ollama", "/api/chat").keys()


async def test_gemini_gets_a_json_mime_type_and_the_schema(world: World) -> None:
    await world.backend("gemini").complete(ChatRequest(ASK, response_format=JSON_SCHEMA))
    generation = world.sent("gemini", ":generateContent")["generationConfig"]
    assert generation["responseMimeType"] == "application/json" and generation["responseJsonSchema"] == SCHEMA


def test_what_each_backend_cannot_honour_is_named(world: World) -> None:
    claude, gemini, local = world.backend("claude"), world.backend("gemini"), world.backend("local")
    assert "no response_format" in claude.unsupported(ChatRequest(ASK, response_format=JSON_SCHEMA))
    assert "tool use" in claude.unsupported(ChatRequest(ASK, tools=[WEATHER]))
    assert "function declarations" in gemini.unsupported(ChatRequest(ASK, tools=[WEATHER]))
    assert "no tool_choice" in local.unsupported(ChatRequest(ASK, tools=[WEATHER], tool_choice=NAMED))
    assert local.unsupported(ChatRequest(ASK, tools=[WEATHER], tool_choice="auto")) is None
    assert world.backend("vllm").unsupported(ChatRequest(ASK, tools=[WEATHER], tool_choice=NAMED)) is None


async def test_openai_tool_calls_come_back_whole_from_an_answer_and_a_stream(world: World) -> None:
    call: dict[str, Any] = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    world.sims["openai"].control.answer = ""
    world.sims["openai"].control.tool_calls = [call]
    request = ChatRequest(ASK, tools=[WEATHER], tool_choice=NAMED)
    completion = await world.backend("vllm").complete(request)
    assert completion.tool_calls == (call,)
    events = [e async for e in world.backend("vllm").stream(request)]
    finish = events[-1]
    assert isinstance(finish, StreamFinish) and finish.tool_calls == (call,)
    function = finish.tool_calls[0]["function"]
    assert isinstance(function, dict) and json.loads(function["arguments"]) == {"city": "Oslo"}


def router(world: World, *models: str) -> tuple[ReasonRouter, Route]:
    table = RoleTable("s", {"orchestrator": "vllm"}, frozenset({"vllm", "local", "gemini", "claude"}))
    route = Route("reason", tuple(Target(f"try-{m}", m) for m in models))
    return ReasonRouter(world.config, LiveRoles(table)), route


async def test_the_router_skips_a_backend_that_cannot_and_the_next_answers(world: World) -> None:
    reason, route = router(world, "claude", "vllm")
    try:
        answer = await reason.complete(route, ChatRequest(ASK, response_format=JSON_SCHEMA))
    finally:
        await reason.aclose()
    skipped, answered = answer.attempts
    assert skipped.status == "skipped" and "Anthropic's Messages API has no response_format" in skipped.reason
    assert (
        answered.backend == "vllm"
        and world.sent("openai", "/chat/completions")["response_format"] == JSON_SCHEMA
    )
    assert not world.sims["anthropic"].requests  # nothing was sent to a backend that would drop the contract


async def test_a_route_where_none_can_is_a_400_naming_why(world: World) -> None:
    reason, route = router(world, "claude")
    try:
        with pytest.raises(OutputUnsupported) as caught:
            await reason.complete(route, ChatRequest(ASK, response_format=JSON_SCHEMA))
        assert caught.value.status == 400 and caught.value.detail["code"] == "unsupported_parameter"
        assert "no response_format" in caught.value.message
        # a route that failed for another reason as well stays the 503 of every strategy failing
        reason2, route2 = router(world, "claude", "nobody")
        with pytest.raises(AllStrategiesFailed) as other:
            await reason2.complete(route2, ChatRequest(ASK, response_format=JSON_SCHEMA))
        assert type(other.value) is AllStrategiesFailed and other.value.status == 503
        await reason2.aclose()
    finally:
        await reason.aclose()
