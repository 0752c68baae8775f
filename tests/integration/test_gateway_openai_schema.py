"""The gateway's answers validate against OpenAI's own published OpenAPI document.

``tests/fixtures/openai/chat-completions.schema.json`` is a trimmed copy of
``openapi.json`` of github.com/openai/openai-openapi (its commit is in the file; ``trim.py``
next to it made it). Every answer, chunk and error the gateway writes is checked against it:
every field OpenAI marks required is present, with the type and the values it allows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stackd.sim.control import Fault
from tests.integration import test_gateway_openai_client
from tests.integration.test_gateway_openai_client import Gateway

gateway = test_gateway_openai_client.gateway  # the fixture: a real uvicorn over three simulators

OPENAI = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "openai" / "chat-completions.schema.json").read_text()
)
MESSAGES = [{"role": "user", "content": "Why?"}]


def check(value: Any, schema: str) -> None:
    """Raise unless ``value`` is valid as OpenAI's ``components.schemas[schema]``."""
    jsonschema.Draft202012Validator({**OPENAI, "$ref": f"#/components/schemas/{schema}"}).validate(value)


def events(text: str) -> list[str]:
    return [event.removeprefix("data: ") for event in text.split("\n\n") if event]


def test_the_copy_names_its_source_and_commit() -> None:
    assert OPENAI["x-source"].startswith("https://github.com/openai/openai-openapi")
    assert len(OPENAI["x-commit"]) == 40
    assert {"CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "ErrorResponse"} <= set(
        OPENAI["components"]["schemas"]
    )


def test_the_check_catches_a_missing_required_field() -> None:
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
    }
    with pytest.raises(jsonschema.ValidationError, match="'logprobs' is a required property"):
        check(answer, "CreateChatCompletionResponse")


@pytest.mark.parametrize("model", ["reason", "elastic:9b", "orchestrator"])
async def test_a_completion_is_openais_chat_completion(gateway: Gateway, model: str) -> None:
    async with gateway.http() as http:
        answer = await http.post(
            "/v1/chat/completions", json={"model": model, "messages": MESSAGES, "max_tokens": 16}
        )
    assert answer.status_code == 200, answer.text
    check(answer.json(), "CreateChatCompletionResponse")


@pytest.mark.parametrize("include_usage", [False, True])
async def test_every_chunk_of_a_stream_is_openais_chunk(gateway: Gateway, include_usage: bool) -> None:
    body = {
        "model": "reason",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }
    async with gateway.http() as http:
        answer = await http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200
    chunks = events(answer.text)
    assert chunks[-1] == "[DONE]"
    for chunk in chunks[:-1]:
        check(json.loads(chunk), "CreateChatCompletionStreamResponse")
    assert ("usage" in json.loads(chunks[-2])) is include_usage


async def test_a_stream_cut_mid_way_ends_with_openais_error_event(gateway: Gateway) -> None:
    await gateway.primary.set_fault(Fault.die_mid_stream)
    async with gateway.http() as http:
        answer = await http.post(
            "/v1/chat/completions", json={"model": "reason", "messages": MESSAGES, "stream": True}
        )
    chunks = events(answer.text)
    for chunk in chunks[:-2]:
        check(json.loads(chunk), "CreateChatCompletionStreamResponse")
    check(json.loads(chunks[-2]), "ErrorResponse")


@pytest.mark.parametrize(
    ("body", "token", "status"),
    [
        ({"model": "nope", "messages": MESSAGES}, None, 404),
        ({"model": "reason", "messages": []}, None, 422),
        ({"model": "reason", "messages": MESSAGES, "max_tokens": "100"}, None, 422),
        ({"model": "reason", "messages": MESSAGES}, "wrong", 401),
    ],
)
async def test_errors_are_openais_error_response(
    gateway: Gateway,
    body: dict[str, Any],
    token: str | None,
    status: int,
) -> None:
    async with gateway.http() as http:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = await http.post("/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == status
    check(answer.json(), "ErrorResponse")


async def test_every_strategy_failing_is_openais_error_response(gateway: Gateway) -> None:
    await gateway.primary.set_fault(Fault.http500)
    await gateway.fallback.set_fault(Fault.refuse)
    async with gateway.http() as http:
        for stream in (False, True):
            body = {"model": "reason", "messages": MESSAGES, "stream": stream}
            answer = await http.post("/v1/chat/completions", json=body)
            assert answer.status_code == 503
            check(answer.json(), "ErrorResponse")


async def test_the_model_list_is_openais(gateway: Gateway) -> None:
    async with gateway.http() as http:
        answer = await http.get("/v1/models")
    check(answer.json(), "ListModelsResponse")
