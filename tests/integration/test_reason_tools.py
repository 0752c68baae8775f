"""The orchestrator's tools over HTTP: schemas an orchestrator can register as is, and the three calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from stackd.api.auth import bearer_guard
from stackd.api.tools import build_tools_router
from stackd.config.models import StacksConfig
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.sim.control import Fault
from stackd.sim.openai import OpenAISim

TOKEN = "tools-test-token"
MODELS = ["reflex-m", "elastic-6b", "elastic-9b", "elastic-12b", "r1", "orch"]


def tools_config(url: str) -> StacksConfig:
    models = {
        name: {
            "runtime": "docker",
            "placement": "gpu",
            "api": "openai",
            "endpoint": f"{url}/v1",
            "served_model": f"{name}-served",
            "docker": {"container": name},
        }
        for name in MODELS
    }
    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "roles": {"orchestrator": {"required": True}, "reflex": {}, "deep_reasoning": {}},
            "models": models,
            "stacks": {
                "s": {
                    "roles": {"orchestrator": "orch", "reflex": "reflex-m", "deep_reasoning": "r1"},
                    "members": ["elastic-6b", "elastic-9b", "elastic-12b"],
                }
            },
            "reason": {
                "strategies": {
                    "cloud_gpu": {"role": "deep_reasoning"},
                    "local_elastic": {"models": ["elastic-12b"]},
                    "reflex": {"role": "reflex"},
                    "local_scheduler": {"role": "orchestrator", "queued": True},
                },
                "default_chain": ["cloud_gpu", "local_elastic", "local_scheduler"],
                "effort": [
                    {"up_to": 3, "chain": ["reflex", "local_elastic", "local_scheduler"]},
                    {"up_to": 6},
                    {"up_to": 8, "chain": ["local_elastic", "cloud_gpu", "local_scheduler"]},
                    {"up_to": 10, "chain": ["cloud_gpu", "local_elastic", "local_scheduler"]},
                ],
            },
            "presets": {
                "elastic": {
                    "slices": {"6b": "elastic-6b", "9b": "elastic-9b", "12b": "elastic-12b"},
                    "default_slice": "12b",
                },
                "reflex": {"role": "reflex"},
            },
        }
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with OpenAISim() as sim:
        config = tools_config(sim.url)
        stack = config.stacks["s"]
        router = ReasonRouter(
            config, LiveRoles(RoleTable("s", dict(stack.roles), frozenset(stack.member_names)))
        )
        app = FastAPI()
        app.include_router(build_tools_router(router, bearer_guard(TOKEN)))
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://stackd", headers=headers
        ) as client:
            client.sim = sim  # type: ignore[attr-defined]
            yield client
        await router.aclose()


async def test_get_tools_returns_three_openai_function_schemas(http: httpx.AsyncClient) -> None:
    tools = (await http.get("/tools")).json()
    assert [t["type"] for t in tools] == ["function"] * 3
    by_name = {t["function"]["name"]: t["function"] for t in tools}
    assert set(by_name) == {"reason", "invoke_model", "deep_reasoning"}
    reason = by_name["reason"]["parameters"]
    assert reason["type"] == "object"
    assert reason["required"] == ["problem"]
    assert (reason["properties"]["effort"]["minimum"], reason["properties"]["effort"]["maximum"]) == (1, 10)
    assert "stream" not in reason["properties"]
    assert by_name["reason"]["description"]
    invoke = by_name["invoke_model"]["parameters"]
    assert invoke["required"] == ["preset"]
    assert {"elastic", "elastic:6b", "elastic:9b", "elastic:12b", "reflex"} <= set(
        invoke["properties"]["preset"]["enum"]
    )
    json.dumps(tools)  # registrable as is: plain JSON


@pytest.mark.parametrize(("effort", "backend"), [(2, "reflex-m"), (5, "r1"), (7, "elastic-12b"), (10, "r1")])
async def test_reason_starts_where_the_effort_says(
    http: httpx.AsyncClient, effort: int, backend: str
) -> None:
    reply = await http.post("/tools/reason", json={"problem": "Why is the sky blue?", "effort": effort})
    assert reply.status_code == 200
    body = reply.json()
    assert body["backend"] == backend
    assert body["answer"] == "Hello from the stackd simulator."
    assert body["attempts"][-1]["status"] == "answered"
    assert body["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize(
    ("args", "backend"),
    [
        ({"preset": "elastic"}, "elastic-12b"),
        ({"preset": "elastic", "options": {"slice": "9b"}}, "elastic-9b"),
        ({"preset": "elastic:6b"}, "elastic-6b"),
        ({"preset": "reflex"}, "reflex-m"),
    ],
)
async def test_invoke_model_by_preset_and_slice(
    http: httpx.AsyncClient, args: dict[str, Any], backend: str
) -> None:
    reply = await http.post("/tools/invoke_model", json={**args, "prompt": "hi"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["backend"] == backend
    assert reply.json()["model"] == f"{backend}-served"


async def test_deep_reasoning_starts_with_the_maximum_quality_strategy(http: httpx.AsyncClient) -> None:
    body = (
        await http.post("/tools/deep_reasoning", json={"problem": "Prove it.", "context": "n > 2"})
    ).json()
    assert (body["strategy"], body["backend"]) == ("cloud_gpu", "r1")
    sent = http.sim.requests[-1].body  # type: ignore[attr-defined]
    assert sent["messages"][0]["content"] == "Prove it.\n\nContext:\nn > 2"


async def test_reason_streams_deltas_then_the_answer_record(http: httpx.AsyncClient) -> None:
    reply = await http.post("/tools/reason", json={"problem": "Why?", "stream": True})
    assert reply.headers["content-type"] == "text/event-stream"
    events = [e.removeprefix("data: ") for e in reply.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    done = json.loads(events[-2])
    assert done["done"] is True
    assert done["backend"] == "r1"
    assert "".join(json.loads(e)["delta"] for e in events[:-2]) == "Hello from the stackd simulator."


async def test_errors_have_stackds_shape(http: httpx.AsyncClient) -> None:
    bad = await http.post("/tools/reason", json={"problem": "x", "effort": 11})
    assert bad.status_code == 422
    assert bad.json()["problems"][0]["field"] == "effort"
    unknown = await http.post("/tools/invoke_model", json={"preset": "nope", "prompt": "x"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "NotFound"
    both = await http.post("/tools/invoke_model", json={"preset": "elastic", "prompt": "x", "messages": []})
    assert both.status_code == 422
    await http.sim.set_fault(Fault.http500)  # type: ignore[attr-defined]
    failed = await http.post("/tools/reason", json={"problem": "x"})
    assert failed.status_code == 503
    assert failed.json()["error"] == "AllStrategiesFailed"
    assert [a["status"] for a in failed.json()["attempts"]] == ["failed", "failed", "failed"]
    unauthorized = await http.post(
        "/tools/reason", json={"problem": "x"}, headers={"Authorization": "Bearer no"}
    )
    assert unauthorized.status_code == 401
