"""The HTTP health checker against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from stackd.config.models import Model
from stackd.drivers.health import HttpHealthChecker, health_url
from stackd.errors import DriverUnavailable


def model(endpoint: str | None, health: dict[str, Any] | None, runtime: str = "docker") -> Model:
    body: dict[str, Any] = {"runtime": runtime, "api": "openai", "endpoint": endpoint, "health": health}
    if runtime == "docker":
        body |= {"placement": "gpu", "docker": {"container": "stackd-test-health"}}
    else:
        body |= {"placement": "cpu", "api": "ollama", "ollama": {"tag": "x:1", "options": {"num_gpu": 0}}}
    return Model.model_validate(body)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1: /health 200, /v1/health 204, /sick 503, /slow answers after 1.5 s; others 404.

    Yields its origin and the list of paths it was asked for.
    """
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path == "/slow":
            await asyncio.sleep(1.5)
        status = {"/health": 200, "/v1/health": 204, "/sick": 503, "/boom": 500}.get(request.path, 404)
        return web.Response(status=status, text="x")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_absolute_health_path_replaces_the_endpoint_path() -> None:
    assert (
        health_url(model("http://127.0.0.1:8120/v1", {"path": "/health"})) == "http://127.0.0.1:8120/health"
    )
    assert (
        health_url(model("http://127.0.0.1:8120/v1", {"path": "health"})) == "http://127.0.0.1:8120/v1/health"
    )
    assert health_url(model("http://127.0.0.1:8188", None)) == "http://127.0.0.1:8188/"
    ollama = model(None, None, runtime="ollama")
    assert health_url(ollama, "http://127.0.0.1:11500") == "http://127.0.0.1:11500/"


async def test_2xx_at_the_health_path_is_healthy(server: tuple[str, list[str]]) -> None:
    origin, seen = server
    checker = HttpHealthChecker()

    await checker.check("m", model(f"{origin}/v1", {"path": "/health"}))
    await checker.check("m", model(f"{origin}/v1", {"path": "health"}))

    assert seen == ["/health", "/v1/health"]


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/sick", 503)])
async def test_a_non_2xx_answer_is_unavailable_with_url_and_status(
    server: tuple[str, list[str]], path: str, status: int
) -> None:
    origin, _ = server
    with pytest.raises(DriverUnavailable) as failure:
        await HttpHealthChecker().check("vision", model(f"{origin}/v1", {"path": path}))
    assert f"at {origin}{path} answered HTTP {status}, expected 2xx" in str(failure.value)
    assert failure.value.detail["status_code"] == status


async def test_without_a_health_section_any_answer_below_500_is_healthy(
    server: tuple[str, list[str]],
) -> None:
    origin, seen = server
    await HttpHealthChecker().check("comfy", model(f"{origin}/v1", None))  # "/" answers 404: the server is up
    assert seen == ["/"]


async def test_without_a_health_section_a_server_error_is_unhealthy() -> None:
    async def boom(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/", boom)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        with pytest.raises(DriverUnavailable, match=r"answered HTTP 500, expected an answer below 500"):
            await HttpHealthChecker().check("comfy", model(origin, None))
    finally:
        await runner.cleanup()


async def test_a_refused_connection_is_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DriverUnavailable, match=rf"health probe of 'm' at {url}/health failed"):
        await HttpHealthChecker().check("m", model(f"{url}/v1", {"path": "/health"}))


async def test_a_hanging_server_is_unavailable_after_the_probe_timeout(server: tuple[str, list[str]]) -> None:
    origin, _ = server
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DriverUnavailable, match=r"got no answer within 0.3 s"):
        await HttpHealthChecker().check("m", model(origin, {"path": "/slow", "timeout_s": 0.3}))
    assert loop.time() - started < 2


async def test_an_ollama_model_is_probed_at_the_ollama_url(server: tuple[str, list[str]]) -> None:
    origin, seen = server
    await HttpHealthChecker(ollama_url=origin).check("elastic-12b", model(None, None, runtime="ollama"))
    assert seen == ["/"]
