"""The Gemini simulator speaks generateContent / streamGenerateContent and Google's error shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from stackd.sim import GeminiSim

pytest_plugins = ["tests.sim_fixtures"]

BODY = {"contents": [{"role": "user", "parts": [{"text": "one two"}]}]}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


async def test_generate_content_returns_candidates_and_usage(gemini_sim: GeminiSim, session) -> None:
    url = gemini_sim.url + "/v1beta/models/gemini-x:generateContent"
    async with session.post(url, json=BODY) as response:
        reply = await response.json()
    candidate = reply["candidates"][0]
    assert candidate["content"]["parts"][0]["text"] == gemini_sim.control.answer
    assert candidate["finishReason"] == "STOP"
    tokens = gemini_sim.control.tokens
    assert reply["usageMetadata"] == {
        "promptTokenCount": 2,
        "candidatesTokenCount": tokens,
        "totalTokenCount": 2 + tokens,
    }


async def test_sse_stream_assembles_the_answer(gemini_sim: GeminiSim, session) -> None:
    url = gemini_sim.url + "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
    async with session.post(url, json=BODY) as response:
        raw = (await response.read()).decode()
    events = [json.loads(block[6:]) for block in raw.split("\r\n\r\n") if block]
    assert len(events) == gemini_sim.control.tokens
    text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert text == gemini_sim.control.answer
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == gemini_sim.control.tokens


async def test_stream_without_alt_sse_is_one_json_array(gemini_sim: GeminiSim, session) -> None:
    url = gemini_sim.url + "/v1beta/models/gemini-x:streamGenerateContent"
    async with session.post(url, json=BODY) as response:
        events = json.loads(await response.read())
    assert len(events) == gemini_sim.control.tokens


async def test_key_in_header_or_query_and_google_error_shapes(gemini_sim: GeminiSim, session) -> None:
    gemini_sim.control.require_api_key = "g-right"
    models = gemini_sim.url + "/v1beta/models?pageSize=1"
    async with session.get(models) as response:
        assert response.status == 403
        assert (await response.json())["error"]["status"] == "PERMISSION_DENIED"
    async with session.get(models, headers={"x-goog-api-key": "g-wrong"}) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["details"][0]["reason"] == "API_KEY_INVALID"
    assert "g-wrong" not in json.dumps(error)
    async with session.get(models, headers={"x-goog-api-key": "g-right"}) as response:
        assert [m["name"] for m in (await response.json())["models"]] == ["models/gemini-sim-flash"]
    async with session.get(models + "&key=g-right") as response:
        assert response.status == 200


async def test_unknown_method_is_not_found(gemini_sim: GeminiSim, session) -> None:
    async with session.post(gemini_sim.url + "/v1beta/models/g:embedEverything", json=BODY) as response:
        assert response.status == 404
        assert (await response.json())["error"]["status"] == "NOT_FOUND"
