"""One error shape, a complete OpenAPI document, and a public bind where only /healthz is open.

The app is the daemon's own (``create_app``) over the in-memory world, with a router, so the
gateway and the tools are mounted; nothing here calls a backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackd.api.app import create_app
from stackd.router import ReasonRouter
from stackd.settings import Settings
from tests.unit.test_api import AUTH, TOKEN
from tests.unit.test_manager_world import close_all, make_world

RAW_PATHS = [
    "/v1/models",
    "/v1/chat/completions",
    "/tools/reason",
    "/tools/invoke_model",
    "/tools/deep_reasoning",
]


async def client_for(tmp_path: Path, host: str) -> AsyncIterator[httpx.AsyncClient]:
    world = make_world(tmp_path)
    manager = world.manager()
    await manager.recover()
    router = ReasonRouter(world.config, manager.live_roles)
    services = world.services(
        manager, Settings(host=host, state_dir=tmp_path / "state"), TOKEN, router=router
    )
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://stackd") as client:
        yield client
    await router.aclose()
    await close_all(world)


@pytest.fixture
async def loopback(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(tmp_path, "127.0.0.1"):
        yield client


@pytest.fixture
async def public(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(tmp_path, "0.0.0.0"):
        yield client


# ---------------------------------------------------------------- one error shape
@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nope", 404, "NotFound"),
        ("GET", "/config/reload", 405, "MethodNotAllowed"),
        ("PUT", "/model-stacks", 405, "MethodNotAllowed"),
    ],
)
async def test_starlettes_own_errors_have_stackds_shape(
    loopback: httpx.AsyncClient, method: str, path: str, status: int, error: str
) -> None:
    answer = await loopback.request(method, path, headers=AUTH)
    assert answer.status_code == status
    assert answer.json()["error"] == error and answer.json()["message"]
    assert "detail" not in answer.json()


async def test_a_method_the_path_does_not_take_names_the_ones_it_does(loopback: httpx.AsyncClient) -> None:
    answer = await loopback.request("GET", "/config/reload", headers=AUTH)
    assert answer.json()["message"] == "GET is not allowed on /config/reload; allowed: POST"
    assert answer.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/v1/chat/completions", 405), ("GET", "/v1/nope", 404)]
)
async def test_under_v1_they_have_openais_shape(
    loopback: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    answer = await loopback.request(method, path, headers=AUTH)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}


async def test_a_malformed_path_parameter_is_stackds_422(loopback: httpx.AsyncClient) -> None:
    answer = await loopback.post("/leases", json={"model": "x", "ttl_s": "soon"}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["error"] == "InvalidRequest" and answer.json()["problems"][0]["field"] == "ttl_s"


# ---------------------------------------------------------------- the OpenAPI document
@pytest.fixture
async def document(loopback: httpx.AsyncClient) -> dict[str, Any]:
    answer = await loopback.get("/openapi.json")
    assert answer.status_code == 200
    doc: dict[str, Any] = answer.json()
    return doc


def test_the_gateway_and_the_tools_are_documented_with_their_bodies_and_answers(
    document: dict[str, Any],
) -> None:
    paths = document["paths"]
    for path in RAW_PATHS:
        method = "get" if path == "/v1/models" else "post"
        operation = paths[path][method]
        assert operation["security"] == [{"bearer": []}]
        assert "$ref" in operation["responses"]["200"]["content"]["application/json"]["schema"]
        if method == "post":
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert "$ref" in body or "$ref" in body["allOf"][0]
            assert "text/event-stream" in operation["responses"]["200"]["content"]
    schemas = document["components"]["schemas"]
    chat = schemas["ChatCompletionBody"]["properties"]
    assert chat["max_tokens"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    assert set(schemas["ChatCompletion"]["required"]) >= {"id", "object", "created", "model", "choices"}
    assert schemas["ReasonArgs"]["required"] == ["problem"]


def test_metrics_is_documented_as_text(document: dict[str, Any]) -> None:
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


@pytest.mark.parametrize(
    ("method", "path", "codes"),
    [
        ("post", "/model-stacks/switch", {"202", "401", "404", "409", "413", "422"}),
        ("post", "/leases", {"401", "404", "409", "413", "422", "503"}),
        ("post", "/config/reload", {"401", "409", "413", "422"}),
        ("get", "/model-stacks/{name}", {"404", "413", "422"}),
        ("post", "/v1/chat/completions", {"401", "404", "413", "422", "503"}),
        ("post", "/tools/reason", {"401", "404", "413", "422", "503", "504"}),
    ],
)
def test_the_error_answers_are_listed_in_their_shapes(
    document: dict[str, Any], method: str, path: str, codes: set[str]
) -> None:
    responses = document["paths"][path][method]["responses"]
    assert codes <= set(responses)
    shape = "OpenAIError" if path.startswith("/v1/") else "ErrorAnswer"
    for code in codes - {"202"}:
        assert responses[code]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{shape}"
        }
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_on_loopback_the_reads_need_no_token_and_say_so(document: dict[str, Any]) -> None:
    assert "security" not in document["paths"]["/status"]["get"]
    assert "401" not in document["paths"]["/status"]["get"]["responses"]


# ---------------------------------------------------------------- the public bind
@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_on_a_public_bind_the_document_and_its_viewers_need_the_token(
    public: httpx.AsyncClient, path: str
) -> None:
    answer = await public.get(path)
    assert answer.status_code in (401, 404), answer.text  # the OAuth2 redirect page is gone
    if path != "/docs/oauth2-redirect":
        assert answer.status_code == 401
        assert (await public.get(path, headers=AUTH)).status_code == 200


async def test_on_a_public_bind_every_operation_but_healthz_needs_the_token(
    public: httpx.AsyncClient,
) -> None:
    document = (await public.get("/openapi.json", headers=AUTH)).json()
    open_ones = []
    for path, item in document["paths"].items():
        for method in item:
            concrete = path.replace("{", "").replace("}", "")
            answer = await public.request(method.upper(), concrete)
            if answer.status_code != 401:
                open_ones.append((method, path, answer.status_code))
            elif path != "/healthz":
                assert item[method]["security"] == [{"bearer": []}]
    assert open_ones == [("get", "/healthz", 200)]
    assert (await public.get("/healthz")).json() == {
        "status": "ok",
        "version": document["info"]["version"],
        "stack_active": True,
    } | {k: None for k in ("url", "pid", "config", "state_dir", "token_source")}
