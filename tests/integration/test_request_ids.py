"""A request id per call, through the front door: the caller's ``X-Request-ID`` (or a new one) is
in the answer's header, on each log line of the call, and in the header of the backend call
(an OpenAI-compatible simulator over loopback records what it received). Prompts reach the log
only with ``log_content``; secrets never."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from stackd.api.auth import bearer_guard
from stackd.api.dispatch import FrontDoor, hot_routes
from stackd.api.request_body import BodyLimits
from stackd.api.tools import build_tools_router
from stackd.logs import content, records
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.sim.control import Fault
from stackd.sim.openai import OpenAISim
from tests.integration.test_reason_tools import TOKEN, tools_config

ENVOY_ID = "3f2c9a1e-7b4d-4c8e-9f0a-1b2c3d4e5f60"  # a proxy's id, in a UUID's form
PROMPT = "What is the capital of France? (the prompt canary 5b2e)"


@dataclass
class Gateway:
    http: httpx.AsyncClient
    sim: OpenAISim
    log: io.StringIO

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    records.configure(secrets=[TOKEN], stream=stream)
    yield stream
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    content.enable(False)


@contextlib.asynccontextmanager
async def open_gateway(log_stream: io.StringIO, log_requests: bool) -> AsyncIterator[Gateway]:
    async with OpenAISim() as sim:
        config = tools_config(sim.url)
        stack = config.stacks["s"]
        router = ReasonRouter(
            config, LiveRoles(RoleTable("s", dict(stack.roles), frozenset(stack.member_names)))
        )
        app = FastAPI()
        tools = build_tools_router(router, bearer_guard(TOKEN))
        app.include_router(tools)
        door = FrontDoor(
            app, hot_routes(tools.routes), bearer_guard(TOKEN), BodyLimits(1 << 20, 1 << 20), log_requests
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=door),
            base_url="http://stackd",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as http:
            yield Gateway(http, sim, log_stream)
        await router.aclose()


@pytest.fixture
async def gateway(log_stream: io.StringIO) -> AsyncIterator[Gateway]:
    async with open_gateway(log_stream, log_requests=True) as opened:
        yield opened


@pytest.fixture
async def quiet_gateway(log_stream: io.StringIO) -> AsyncIterator[Gateway]:
    """The daemon's default: no line per request (no ``--log-requests``)."""
    async with open_gateway(log_stream, log_requests=False) as opened:
        yield opened


async def reason(gateway: Gateway, headers: dict[str, str] | None = None) -> httpx.Response:
    answer = await gateway.http.post(
        "/tools/reason", json={"problem": PROMPT, "effort": 2}, headers=headers or {}
    )
    assert answer.status_code == 200, answer.text
    return answer


async def test_the_caller_s_id_is_answered_logged_and_sent_to_the_backend(gateway: Gateway) -> None:
    answer = await reason(gateway, {"X-Request-ID": ENVOY_ID})
    assert answer.headers["x-request-id"] == ENVOY_ID
    [upstream] = [r for r in gateway.sim.requests if r.path.endswith("/chat/completions")]
    assert upstream.headers["x-request-id"] == ENVOY_ID
    [access] = [line for line in gateway.log_lines() if line["logger"] == "stackd.access"]
    assert access["request_id"] == ENVOY_ID
    assert (access["method"], access["path"], access["status"]) == ("POST", "/tools/reason", 200)
    assert isinstance(access["duration_ms"], float)


async def test_without_one_each_call_gets_its_own(gateway: Gateway) -> None:
    first = (await reason(gateway)).headers["x-request-id"]
    second = (await reason(gateway, {"X-Request-ID": "has spaces, so unusable"})).headers["x-request-id"]
    assert len(first) == len(second) == 32 and first != second
    sent = [r.headers["x-request-id"] for r in gateway.sim.requests if r.path.endswith("/chat/completions")]
    assert sent == [first, second]
    refused = await gateway.http.get("/nope", headers={"Authorization": "Bearer wrong"})
    assert len(refused.headers["x-request-id"]) == 32  # every answer has one, errors too


async def test_a_caller_s_id_not_in_a_uuid_s_form_is_kept_but_not_passed_on(gateway: Gateway) -> None:
    answer = await reason(gateway, {"X-Request-ID": "trace-01HZX-42"})
    assert answer.headers["x-request-id"] == "trace-01HZX-42"
    [upstream] = [r for r in gateway.sim.requests if r.path.endswith("/chat/completions")]
    assert "x-request-id" not in upstream.headers  # llama.cpp's Python server would answer 400
    [access] = [line for line in gateway.log_lines() if line["logger"] == "stackd.access"]
    assert access["request_id"] == "trace-01HZX-42"


async def test_prompts_reach_the_log_only_with_log_content_and_secrets_never(gateway: Gateway) -> None:
    await reason(gateway, {"X-Request-ID": "quiet-call"})
    assert "prompt canary" not in gateway.log.getvalue()
    content.enable(True)
    await reason(gateway, {"X-Request-ID": "logged-call"})
    [exchange] = [line for line in gateway.log_lines() if line["logger"] == "stackd.content"]
    assert exchange["request_id"] == "logged-call"
    assert exchange["messages"] == [{"role": "user", "content": PROMPT}]
    assert exchange["answer"]
    logging.getLogger("stackd.test").warning("a careless line with %s", f"Bearer {TOKEN}")
    assert TOKEN not in gateway.log.getvalue() and records.REDACTED in gateway.log.getvalue()


async def test_a_504_without_log_requests_has_a_line_with_its_id_and_why(quiet_gateway: Gateway) -> None:
    await reason(quiet_gateway, {"X-Request-ID": "fine-call"})
    assert quiet_gateway.log_lines() == []  # a call answered 200: no line without --log-requests
    await quiet_gateway.sim.set_fault(Fault.hang)
    answer = await quiet_gateway.http.post(
        "/tools/reason",
        json={"problem": PROMPT, "effort": 2, "timeout_s": 1},
        headers={"X-Request-ID": "late"},
    )
    assert answer.status_code == 504, answer.text
    [line] = quiet_gateway.log_lines()
    assert (line["level"], line["logger"], line["request_id"]) == ("WARNING", "stackd.access", "late")
    assert (line["method"], line["path"], line["status"]) == ("POST", "/tools/reason", 504)
    assert line["error"] == answer.json()["message"]
    assert "no complete answer within timeout_s=1 s" in str(line["msg"])


async def test_every_error_line_of_a_failed_handler_carries_the_id_also_the_server_s(
    log_stream: io.StringIO,
) -> None:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        logging.getLogger("stackd.test").error("about to fail")
        raise RuntimeError("a bug")

    door = FrontDoor(app, {}, bearer_guard(TOKEN), BodyLimits(1 << 20, 1 << 20), False)
    server = uvicorn.Server(
        uvicorn.Config(door, host="127.0.0.1", port=0, log_config=None, lifespan="off", ws="none")
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/boom", headers={"X-Request-ID": "the-bug"})
            assert answer.status_code == 500
            assert (await http.get(f"http://127.0.0.1:{port}/nope")).status_code == 404
    finally:
        server.should_exit = True
        await serving
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    errors = [line for line in lines if line["level"] in ("WARNING", "ERROR")]
    # The handler's own line, the front door's 500 line and uvicorn's traceback line.
    assert [(e["logger"], e["request_id"]) for e in errors] == [
        ("stackd.test", "the-bug"),
        ("stackd.access", "the-bug"),
        ("uvicorn.error", "the-bug"),
    ], errors
    assert "RuntimeError: a bug" in str(errors[2]["exc"])
    assert errors[1]["error"] == "unhandled RuntimeError"
