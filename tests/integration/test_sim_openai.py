"""The OpenAI simulator speaks the protocol the official ``openai`` client expects."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import httpx
import openai
import pytest

from stackd.sim import Fault, OpenAISim, SimControl

pytest_plugins = ["tests.sim_fixtures"]


def _client(sim: OpenAISim, key: str = "sk-test") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key=key, max_retries=0, timeout=5)


async def test_chat_completion_returns_the_answer_and_usage(openai_sim: OpenAISim) -> None:
    openai_sim.control.answer = "forty two"
    openai_sim.control.tokens = 3
    async with _client(openai_sim) as client:
        reply = await client.chat.completions.create(
            model="my-model", messages=[{"role": "user", "content": "what is six times seven"}]
        )
    assert reply.choices[0].message.content == "forty two"
    assert reply.model == "my-model"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (5, 3, 8)


async def test_stream_yields_deltas_then_the_usage_chunk_when_asked(openai_sim: OpenAISim) -> None:
    openai_sim.control.tokens = 5
    async with _client(openai_sim) as client:
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == openai_sim.control.answer
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_stream_without_include_usage_ends_with_done_and_no_usage(openai_sim: OpenAISim) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(openai_sim.url + "/v1/chat/completions", json=body) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = (await response.read()).decode()
    events = [line[6:] for line in raw.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"


async def test_legacy_completions_and_model_list(openai_sim: OpenAISim) -> None:
    async with _client(openai_sim) as client:
        completion = await client.completions.create(model="m", prompt="say hi")
        models = await client.models.list()
    assert completion.choices[0].text == openai_sim.control.answer
    assert [m.id for m in models.data] == ["sim-model"]


async def test_missing_model_is_a_400_in_openai_shape(openai_sim: OpenAISim) -> None:
    async with _client(openai_sim) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="", messages=[])
    assert caught.value.status_code == 400


async def test_required_key_rejects_wrong_keys_without_echoing_them(openai_sim: OpenAISim) -> None:
    openai_sim.control.require_api_key = "sk-right"
    async with _client(openai_sim, key="sk-wrong-secret") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.models.list()
    assert caught.value.status_code == 401
    assert "sk-wrong-secret" not in str(caught.value.body)
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    async with _client(openai_sim, key="sk-right") as client:
        assert (await client.models.list()).data


async def test_requests_are_recorded_with_secrets_redacted(openai_sim: OpenAISim) -> None:
    async with _client(openai_sim, key="sk-very-secret") as client:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    method, path, body, headers = openai_sim.requests[-1]
    assert isinstance(body, dict)
    assert (method, path, body["model"]) == ("POST", "/v1/chat/completions", "m")
    assert headers["authorization"] == "<redacted>"
    assert "sk-very-secret" not in repr(openai_sim.requests)


async def test_openai_client_reports_the_injected_faults(openai_sim: OpenAISim) -> None:
    async with _client(openai_sim) as client:
        await openai_sim.set_fault(Fault.http500)
        with pytest.raises(openai.InternalServerError):
            await client.models.list()
        await openai_sim.set_fault(Fault.die_mid_stream)
        stream = await client.chat.completions.create(model="m", messages=[], stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        await openai_sim.set_fault(Fault.refuse)
        with pytest.raises(openai.APIConnectionError):
            await client.models.list()


async def test_admin_endpoint_changes_the_fault_and_reverts_after_duration(openai_sim: OpenAISim) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        async with session.post(openai_sim.url + "/_sim/fault", json={"fault": "http500"}) as response:
            assert (await response.json())["fault"] == "http500"
        async with session.get(openai_sim.url + "/v1/models") as response:
            assert response.status == 500
        async with session.post(
            openai_sim.url + "/_sim/fault", json={"fault": "refuse", "duration_s": 0.3}
        ) as r:
            assert r.status == 200
        await asyncio.sleep(0.1)
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(openai_sim.url + "/v1/models")
        await asyncio.sleep(0.4)
        async with session.get(openai_sim.url + "/v1/models") as response:
            assert response.status == 200
        async with session.post(openai_sim.url + "/_sim/fault", json={"fault": "bogus"}) as response:
            assert response.status == 400
    assert all(not path.startswith("/_sim") for _, path, _, _ in openai_sim.requests)


def test_a_simulator_runs_in_a_thread_for_sync_callers() -> None:
    with OpenAISim.start_in_thread(control=SimControl(answer="sync")) as handle:
        reply = httpx.post(
            handle.url + "/v1/chat/completions", json={"model": "m", "messages": []}, timeout=5
        )
        assert reply.json()["choices"][0]["message"]["content"] == "sync"
        handle.set_fault(Fault.refuse)
        with pytest.raises(httpx.ConnectError):
            httpx.get(handle.url + "/v1/models", timeout=2)
        handle.set_fault("none")
        assert httpx.get(handle.url + "/v1/models", timeout=2).status_code == 200
        assert len(handle.requests) == 2  # the refused request never arrived
