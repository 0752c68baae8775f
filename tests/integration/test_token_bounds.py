"""``max_tokens`` is validated as OpenAI validates it: a JSON integer from 1 to 2^31-1.

Before, ``10^30`` and ``"100"`` went through to the backend. The gateway answers OpenAI's error
shape (422, ``invalid_request_error``) and the tools stackd's, naming the field; a valid value
still reaches the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from stackd.api.auth import bearer_guard
from stackd.api.gateway import MAX_TOKENS, build_gateway_router
from stackd.api.tools import build_tools_router
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.sim.openai import OpenAISim
from tests.integration.test_reason_tools import TOKEN, tools_config

REFUSED = [10**30, "100", 100.5, True, 0, -1, MAX_TOKENS + 1, [1], {"n": 1}]
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with OpenAISim() as sim:
        config = tools_config(sim.url)
        stack = config.stacks["s"]
        router = ReasonRouter(
            config, LiveRoles(RoleTable("s", dict(stack.roles), frozenset(stack.member_names)))
        )
        app = FastAPI()
        auth = bearer_guard(TOKEN)
        app.include_router(build_tools_router(router, auth))
        app.include_router(build_gateway_router(router, auth))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://stackd", headers=headers
        ) as client:
            yield client
        await router.aclose()


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", REFUSED, ids=repr)
async def test_the_gateway_refuses_a_max_tokens_openai_refuses(
    http: httpx.AsyncClient, field: str, value: Any
) -> None:
    reply = await http.post(
        "/v1/chat/completions", json={"model": "reason", "messages": MESSAGES, field: value}
    )
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert field in error["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tools/reason", {"problem": "p", "max_tokens": "{}"}),
        ("/tools/deep_reasoning", {"problem": "p", "max_tokens": "{}"}),
        ("/tools/invoke_model", {"preset": "reflex", "prompt": "p", "options": {"max_tokens": "{}"}}),
    ],
)
@pytest.mark.parametrize("value", REFUSED, ids=repr)
async def test_the_tools_refuse_the_same_values(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], value: Any
) -> None:
    def put(node: Any) -> Any:
        return (
            {k: (value if v == "{}" else put(v)) for k, v in node.items()} if isinstance(node, dict) else node
        )

    reply = await http.post(path, json=put(body))
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "RequestRejected"
    assert "max_tokens" in reply.json()["message"]


@pytest.mark.parametrize("value", ["7", 7.5, True])
async def test_effort_is_a_strict_integer_too(http: httpx.AsyncClient, value: Any) -> None:
    reply = await http.post("/tools/reason", json={"problem": "p", "effort": value})
    assert reply.status_code == 422 and "effort" in reply.json()["message"]


@pytest.mark.parametrize("value", [1, 16, 16.0, MAX_TOKENS])
async def test_a_valid_max_tokens_reaches_the_backend(http: httpx.AsyncClient, value: int) -> None:
    reply = await http.post(
        "/v1/chat/completions", json={"model": "reason", "messages": MESSAGES, "max_tokens": value}
    )
    assert reply.status_code == 200, reply.text
    reply = await http.post("/tools/reason", json={"problem": "p", "max_tokens": value})
    assert reply.status_code == 200, reply.text
