"""The auth matrix (issue 26): every route and MCP tool, by a key of each scope and the bootstrap
token, by the header variants, on a loopback and a public bind; each answer is what docs/security.md's
table says: allowed (any status but 401/403, never a 5xx), 401, or 403 naming the scope.

The expectations come from the document, not from ``stackd.api.scopes``: a scope widened in the
code alone is caught (``test_a_widened_scope_fails_the_matrix``).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackd.api.app import create_app
from stackd.api.keyring import KeySpec
from stackd.api.scopes import ROUTES, RouteTable, Rule, Scope
from stackd.router import ReasonRouter
from stackd.settings import Settings
from stackd.state.audit import AuditLog
from stackd.state.keys import KeyStore
from tests.unit.test_api import TOKEN
from tests.unit.test_manager_world import close_all, make_world
from tests.unit.test_scope_table import documented_routes, documented_tools

SCOPES = [s.value for s in Scope]
# Endless answers (an event stream, MCP's GET stream): checked where the front door refuses them.
STREAMS = {("GET", "/status/events"), ("GET", "/mcp")}


class Matrix:
    def __init__(self, client: httpx.AsyncClient, keys: dict[str, str], loopback: bool, app: Any) -> None:
        self.client, self.keys, self.loopback, self.app = client, keys, loopback, app


async def matrix_for(tmp_path: Path, host: str) -> AsyncIterator[Matrix]:
    world = make_world(tmp_path)
    manager = world.manager()
    await manager.recover()
    router = ReasonRouter(world.config, manager.live_roles)
    services = world.services(
        manager, Settings(host=host, state_dir=tmp_path / "state"), TOKEN, router=router
    )
    services.keys = KeyStore(tmp_path / "keys.db")
    services.audit = AuditLog(tmp_path / "keys.db")
    app = create_app(services, load_config=lambda: world.config)
    keys = {"bootstrap": TOKEN}
    for scope in SCOPES:
        _, keys[scope] = app.state.gate.keyring.create(KeySpec(f"k-{scope}", (scope,)))
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://stackd", timeout=5)
    async with client, app.router.lifespan_context(app):
        yield Matrix(client, keys, host == "127.0.0.1", app)
    await router.aclose()
    services.keys.close()
    services.audit.close()
    await close_all(world)


@pytest.fixture(params=["127.0.0.1", "0.0.0.0"], ids=["loopback", "public"])
async def matrix(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Matrix]:
    async for m in matrix_for(tmp_path, request.param):
        yield m


def bad_variants(token: str) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    basic = base64.b64encode(f"x:{token}".encode()).decode()
    return {
        "none": ({}, {}),
        "wrong": ({"Authorization": "Bearer wrong-" + token[:4]}, {}),
        "empty bearer": ({"Authorization": "Bearer "}, {}),
        "query": ({}, {"token": token, "access_token": token}),
        "basic": ({"Authorization": f"Basic {basic}"}, {}),
    }


async def ask(m: Matrix, method: str, path: str, headers: dict[str, str], params: dict[str, str]) -> int:
    url = path.replace("{", "").replace("}", "")  # /roles/{role} -> /roles/role: none such
    body: dict[str, Any] | None = {} if method == "POST" else None
    try:
        async with asyncio.timeout(10):
            answer = await m.client.request(method, url, headers=headers, params=params, json=body)
    except TimeoutError:
        raise AssertionError(f"{method} {url} {headers} did not answer") from None
    if answer.status_code == 403:
        assert "needs a key with scope" in answer.text, answer.text
    return answer.status_code


def verdict(status: int) -> str:
    assert status < 500, status
    return {401: "401", 403: "403"}.get(status, "allowed")


async def mismatches(m: Matrix) -> list[str]:
    wrong = []
    for (method, path), (scope, open_on_loopback) in documented_routes().items():
        open_here = scope == "open" or (open_on_loopback and m.loopback)
        for variant, (headers, params) in bad_variants(TOKEN).items():
            if (method, path) in STREAMS and open_here:
                continue  # an endless stream: its allowed case is checked with a key below
            got = verdict(await ask(m, method, path, headers, params))
            if got != ("allowed" if open_here else "401"):
                wrong.append(f"{method} {path} [{variant}] -> {got}")
        for who, token in m.keys.items():
            for scheme in ("Bearer", "bearer"):
                if (method, path) in STREAMS and (
                    open_here or who in ("bootstrap", scope) or scope == "any-key"
                ):
                    continue
                got = verdict(await ask(m, method, path, {"Authorization": f"{scheme} {token}"}, {}))
                may = open_here or who == "bootstrap" or who == scope or scope == "any-key"
                if got != ("allowed" if may else "403"):
                    wrong.append(f"{method} {path} [{who} {scheme}] -> {got}")
    return wrong


async def test_every_route_answers_what_the_table_says(matrix: Matrix) -> None:
    assert await mismatches(matrix) == []


async def test_every_route_the_app_serves_has_a_row(matrix: Matrix) -> None:
    served = {(m.upper(), p) for p, ops in matrix.app.openapi()["paths"].items() for m in ops}
    served |= {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/status/events")}
    assert served - set(documented_routes()) == set()


async def mcp(m: Matrix, token: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    answer = await m.client.post("/mcp", json=payload, headers=headers)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def test_mcp_lists_and_calls_only_the_tools_of_the_keys_scopes(matrix: Matrix) -> None:
    tools = documented_tools()
    for who, token in matrix.keys.items():
        listed = {t["name"] for t in (await mcp(matrix, token, "tools/list", {}))["result"]["tools"]}
        assert listed == {n for n, s in tools.items() if who in ("bootstrap", s)}, who
        for name, scope in tools.items():
            result = (await mcp(matrix, token, "tools/call", {"name": name, "arguments": {}}))["result"]
            refused = result.get("structuredContent", {}).get("error") == "Forbidden"
            assert refused == (who not in ("bootstrap", scope)), (who, name, result)


async def test_a_widened_scope_fails_the_matrix(tmp_path: Path) -> None:
    widened = tuple(
        Rule(r.method, r.path, Scope.GATEWAY)
        if r.path == "/model-stacks/switch" and r.method == "POST"
        else r
        for r in ROUTES
    )
    async for m in matrix_for(tmp_path, "0.0.0.0"):
        m.app.state.gate.table = RouteTable(widened)
        wrong = await mismatches(m)
    assert "POST /model-stacks/switch [gateway Bearer] -> allowed" in wrong
