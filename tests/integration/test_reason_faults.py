"""reason() against the protocol simulators: every fault on every chain position, over real HTTP.

The chain of this scenario has five targets over four protocols, in the seed's order:
cloud_gpu (OpenAI, a rented vLLM) -> local_elastic (Ollama native) -> cloud_api (Gemini, then
Anthropic) -> local_scheduler (the local OpenAI orchestrator, queued). To put a fault at
position k with the others healthy, the targets before k are left out of the active stack
(their attempts say so) and target k's simulator misbehaves: the next one must answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from stackd.config.models import StacksConfig
from stackd.errors import AllStrategiesFailed
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ChatRequest, FailureKind, ReasonRouter
from stackd.router.types import StreamBroken, StreamDone, TextDelta
from stackd.sim.anthropic import AnthropicSim
from stackd.sim.control import Fault
from stackd.sim.gemini import GeminiSim
from stackd.sim.ollama import OllamaSim
from stackd.sim.openai import OpenAISim
from stackd.sim.server import SimServer

ORDER = ["r1", "elastic", "gemini", "claude", "orch"]
STRATEGY = {
    "r1": "cloud_gpu",
    "elastic": "local_elastic",
    "gemini": "cloud_api",
    "claude": "cloud_api",
    "orch": "local_scheduler",
}
KEYS = {
    "r1": ("TEST_R1_KEY", "sk-r1-secret-1"),
    "gemini": ("TEST_GEMINI_KEY", "g-secret-2"),
    "claude": ("TEST_CLAUDE_KEY", "a-secret-3"),
}
ELASTIC_TAG = "nemotron-elastic:12b"
REQUEST = ChatRequest(
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
)
FAULTS = [
    Fault.refuse,
    Fault.http500,
    Fault.hang,
    Fault.slow_first_token,
    Fault.die_mid_stream,
    Fault.malformed_body,
]
EXPECTED_KIND = {
    Fault.refuse: FailureKind.refused,
    Fault.http500: FailureKind.http_5xx,
    Fault.hang: FailureKind.timeout,
    Fault.slow_first_token: FailureKind.timeout,
    Fault.die_mid_stream: FailureKind.stream_cut,
    Fault.malformed_body: FailureKind.malformed,
}


def scenario_config(sims: dict[str, SimServer], first_token_s: float = 0.3) -> StacksConfig:
    def remote(name: str, api: str, endpoint: str) -> dict[str, Any]:
        return {
            "runtime": "remote",
            "placement": "cloud",
            "api": api,
            "endpoint": endpoint,
            "served_model": f"{name}-served",
            "remote": {"api_key_env": KEYS[name][0]},
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
        }

    return StacksConfig.model_validate(
        {
            "default_stack": "hybrid",
            "ollama": {"url": sims["elastic"].url},
            "roles": {"orchestrator": {"required": True}, "deep_reasoning": {}},
            "models": {
                "r1": remote("r1", "openai", f"{sims['r1'].url}/v1"),
                "elastic": {
                    "runtime": "ollama",
                    "placement": "cpu",
                    "api": "ollama",
                    "ollama": {
                        "tag": ELASTIC_TAG,
                        "options": {"num_gpu": 0, "num_ctx": 8192},
                        "keep_alive": -1,
                    },
                },
                "gemini": remote("gemini", "gemini", f"{sims['gemini'].url}/v1beta"),
                "claude": remote("claude", "anthropic", sims["claude"].url),
                "orch": {
                    "runtime": "docker",
                    "placement": "gpu",
                    "api": "openai",
                    "endpoint": f"{sims['orch'].url}/v1",
                    "docker": {"container": "orch"},
                },
            },
            "stacks": {
                "hybrid": {
                    "roles": {"orchestrator": "orch", "deep_reasoning": "r1"},
                    "members": ["elastic", "gemini", "claude"],
                }
            },
            "reason": {
                "strategies": {
                    "cloud_gpu": {"role": "deep_reasoning"},
                    "local_elastic": {"models": ["elastic"]},
                    "cloud_api": {"models": ["gemini", "claude"]},
                    "local_scheduler": {"role": "orchestrator", "queued": True},
                },
                "default_chain": ["cloud_gpu", "local_elastic", "cloud_api", "local_scheduler"],
                "timeouts": {"connect_s": 1, "first_token_s": first_token_s, "total_s": 10},
                "circuit": {"failure_threshold": 3, "cooldown_s": 30},
            },
        }
    )


def table_without(excluded: list[str]) -> RoleTable:
    bindings = {
        role: model
        for role, model in {"orchestrator": "orch", "deep_reasoning": "r1"}.items()
        if model not in excluded
    }
    return RoleTable("hybrid", bindings, frozenset(m for m in ORDER if m not in excluded))


@dataclass
class Scenario:
    sims: dict[str, SimServer]
    config: StacksConfig

    def router(self, excluded: list[str] | None = None) -> ReasonRouter:
        return ReasonRouter(self.config, LiveRoles(table_without(excluded or [])))


@pytest.fixture
async def scenario(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Scenario]:
    sims: dict[str, SimServer] = {
        "r1": OpenAISim(),
        "elastic": OllamaSim(pulled={ELASTIC_TAG: 7_500_000_000}),
        "gemini": GeminiSim(),
        "claude": AnthropicSim(),
        "orch": OpenAISim(),
    }
    for name, (env, key) in KEYS.items():
        monkeypatch.setenv(env, key)
        sims[name].control.require_api_key = key
    for sim in sims.values():
        await sim.start()
    try:
        yield Scenario(sims, scenario_config(sims))
    finally:
        for sim in sims.values():
            await sim.stop()


def leaks_a_key(value: Any) -> bool:
    text = json.dumps(value)
    return any(key in text for _, key in KEYS.values())


@pytest.mark.parametrize("fault", FAULTS, ids=str)
@pytest.mark.parametrize("position", range(len(ORDER) - 1), ids=lambda p: ORDER[p])
async def test_a_fault_at_each_position_is_answered_by_the_next(
    scenario: Scenario, fault: Fault, position: int
) -> None:
    faulty, answering = ORDER[position], ORDER[position + 1]
    router = scenario.router(excluded=ORDER[:position])
    await scenario.sims[faulty].set_fault(fault)
    try:
        answer = await router.reason(REQUEST)
    finally:
        await router.aclose()
    assert answer.backend == answering
    assert answer.text == "Hello from the stackd simulator."
    assert answer.usage.completion_tokens == 8
    assert answer.usage.prompt_tokens is not None and answer.usage.prompt_tokens > 0
    statuses = [(a.backend, a.status) for a in answer.attempts]
    assert statuses == [
        # r1 leaves through its role: an unbound role resolves to no backend at all; gemini shares
        # cloud_api with claude, and a strategy lists only its members when it has some
        *(
            (None if m == "r1" else m, "skipped")
            for m in ORDER[:position]
            if m != "gemini" or faulty != "claude"
        ),
        (faulty, "failed"),
        (answering, "answered"),
    ]
    failed = answer.attempts[-2]
    assert failed.kind is EXPECTED_KIND[fault], failed.reason
    assert failed.strategy == STRATEGY[faulty]
    assert not leaks_a_key(answer.to_dict())


async def test_the_answer_reports_backend_model_usage_and_cost(scenario: Scenario) -> None:
    router = scenario.router()
    answer = await router.reason(REQUEST)
    await router.aclose()
    assert (answer.strategy, answer.backend, answer.model) == ("cloud_gpu", "r1", "r1-served")
    assert answer.usage.prompt_tokens is not None
    assert answer.cost_usd == pytest.approx((answer.usage.prompt_tokens * 1.0 + 8 * 4.0) / 1e6)
    sent = scenario.sims["r1"].requests[-1]
    assert isinstance(sent.body, dict) and sent.body["model"] == "r1-served"
    assert sent.headers["authorization"] == "<redacted>"  # the key did travel, in its header


async def test_with_none_healthy_the_503_lists_each_reason(scenario: Scenario) -> None:
    for name, fault in zip(
        ORDER, [Fault.refuse, Fault.http500, Fault.malformed_body, Fault.hang, Fault.http500], strict=True
    ):
        await scenario.sims[name].set_fault(fault)
    router = scenario.router()
    with pytest.raises(AllStrategiesFailed) as caught:
        await router.reason(REQUEST)
    await router.aclose()
    body = caught.value.to_dict()
    assert caught.value.status == 503
    assert [(a["backend"], a["status"]) for a in body["attempts"]] == [(m, "failed") for m in ORDER]
    reasons = [a["reason"] for a in body["attempts"]]
    for reason, kind in zip(
        reasons, ["refused", "http_5xx", "malformed", "timeout", "http_5xx"], strict=True
    ):
        assert reason.startswith(kind), reason
        assert reason in body["message"]
    assert not leaks_a_key(body)


async def test_a_missing_api_key_is_a_skip_with_the_variable_named(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_R1_KEY")
    router = scenario.router()
    answer = await router.reason(REQUEST)
    await router.aclose()
    assert answer.attempts[0].status == "skipped"
    assert answer.attempts[0].reason == "API key variable TEST_R1_KEY is not set"
    assert answer.backend == "elastic"


async def test_a_wrong_key_is_an_http_4xx_failure_without_the_key_in_it(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_R1_KEY", "sk-wrong-key-value")
    router = scenario.router()
    answer = await router.reason(REQUEST)
    await router.aclose()
    assert answer.attempts[0].kind is FailureKind.http_4xx
    assert "sk-wrong-key-value" not in json.dumps(answer.to_dict())


async def test_a_refusing_primary_opens_its_circuit_then_is_skipped(scenario: Scenario) -> None:
    await scenario.sims["r1"].set_fault(Fault.refuse)
    router = scenario.router()
    for _ in range(3):
        assert (await router.reason(REQUEST)).attempts[0].status == "failed"
    answer = await router.reason(REQUEST)
    stats = router.stats()
    await router.aclose()
    assert answer.attempts[0].status == "skipped"
    assert answer.attempts[0].reason.startswith("circuit open until")
    assert stats["circuits"]["r1"]["state"] == "open"
    row = next(r for r in stats["strategies"] if r["backend"] == "r1")
    assert (row["requests"], row["skipped"], row["failures"]) == (3, 1, {"refused": 3})


async def test_ollama_calls_carry_the_configured_options_and_keep_alive(scenario: Scenario) -> None:
    router = scenario.router(excluded=["r1"])
    answer = await router.reason(
        ChatRequest([{"role": "user", "content": "hi"}], max_tokens=32, temperature=0)
    )
    await router.aclose()
    assert answer.backend == "elastic"
    body = scenario.sims["elastic"].requests[-1].body
    assert isinstance(body, dict)
    assert body["options"] == {"num_gpu": 0, "num_ctx": 8192, "num_predict": 32, "temperature": 0}
    assert body["keep_alive"] == -1
    assert body["stream"] is False


@pytest.mark.parametrize("name", ["r1", "elastic", "gemini", "claude"])
async def test_each_protocol_streams_text_then_a_finish_with_usage(scenario: Scenario, name: str) -> None:
    router = scenario.router(excluded=ORDER[: ORDER.index(name)])
    items = [item async for item in router.stream(router.reason_route(), REQUEST)]
    await router.aclose()
    done = items[-1].answer  # type: ignore[union-attr]
    assert done.backend == name
    assert "".join(i.text for i in items[:-1]) == "Hello from the stackd simulator." == done.text  # type: ignore[union-attr]
    assert (done.usage.prompt_tokens or 0) > 0 or name == "r1"
    assert done.usage.completion_tokens == 8


@pytest.mark.parametrize("fault", [f for f in FAULTS if f is not Fault.die_mid_stream], ids=str)
@pytest.mark.parametrize("faulty", ["r1", "elastic", "gemini", "claude"])
async def test_a_stream_fault_before_the_first_token_moves_on(
    scenario: Scenario, fault: Fault, faulty: str
) -> None:
    position = ORDER.index(faulty)
    router = scenario.router(excluded=ORDER[:position])
    await scenario.sims[faulty].set_fault(fault)
    items = [item async for item in router.stream(router.reason_route(), REQUEST)]
    await router.aclose()
    last = items[-1]
    if isinstance(last, StreamBroken):
        # Gemini's and Ollama's first chunk already carries text: their malformed tail is past it
        assert fault is Fault.malformed_body and faulty in {"gemini", "elastic"}, last
        assert last.backend == faulty
        return
    assert isinstance(last, StreamDone)
    assert last.answer.backend == ORDER[position + 1]
    assert last.answer.text == "Hello from the stackd simulator."
    assert [a.status for a in last.answer.attempts][-2:] == ["failed", "answered"]


@pytest.mark.parametrize("faulty", ["r1", "elastic", "gemini", "claude"])
async def test_a_stream_cut_after_the_first_token_ends_with_the_backend_named(
    scenario: Scenario, faulty: str
) -> None:
    router = scenario.router(excluded=ORDER[: ORDER.index(faulty)])
    scenario.sims[faulty].control.cut_after_chunks = 5  # past Anthropic's preamble events: text was sent
    await scenario.sims[faulty].set_fault(Fault.die_mid_stream)
    items = [item async for item in router.stream(router.reason_route(), REQUEST)]
    await router.aclose()
    last = items[-1]
    assert isinstance(last, StreamBroken)
    assert last.backend == faulty
    assert last.reason.startswith("stream_cut")
    assert [a.status for a in last.attempts][-1] == "failed"
    assert any(isinstance(i, TextDelta) for i in items[:-1])
