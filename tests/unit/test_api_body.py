"""The control API reads a JSON body as JSON whatever Content-Type comes with it.

``curl -d '{"stack": "elastic-hybrid"}'`` sends ``application/x-www-form-urlencoded``; people type
it without ``-H 'Content-Type: application/json'``. The body model still validates what it reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.test_api import AUTH, Daemon, start
from tests.unit.test_manager_world import close_all, make_world

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = await start(make_world(tmp_path), tmp_path)
    yield d
    await d.client.aclose()
    await close_all(d.world)


def headers(content_type: str | None) -> dict[str, str]:
    return {**AUTH, "Content-Type": content_type} if content_type else dict(AUTH)


@pytest.mark.parametrize("content_type", [FORM, None, "text/plain", "application/json; charset=utf-8"])
async def test_a_switch_body_is_json_whatever_its_content_type(
    daemon: Daemon, content_type: str | None
) -> None:
    resp = await daemon.client.post(
        "/model-stacks/switch",
        content=b'{"stack": "elastic-hybrid", "dry_run": true}',
        headers=headers(content_type),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["plan"]["stack"] == "elastic-hybrid"


@pytest.mark.parametrize(
    "body, field, message",
    [
        (b'{"stack": ""}', "stack", "at least 1 character"),
        (b'{"stack": "x", "dry_run": "maybe"}', "dry_run", "valid boolean"),
        (b'{"stak": "elastic-hybrid"}', "stak", "Extra inputs"),
        (b"stack=elastic-hybrid", "body", "not JSON"),
    ],
)
@pytest.mark.parametrize("content_type", [FORM, None])
async def test_a_malformed_body_is_422_naming_the_field(
    daemon: Daemon, content_type: str | None, body: bytes, field: str, message: str
) -> None:
    resp = await daemon.client.post("/model-stacks/switch", content=body, headers=headers(content_type))
    assert resp.status_code == 422
    problems = resp.json()["problems"]
    assert any(p["field"] == field and message in p["message"] for p in problems), problems
    assert "valid dictionary" not in resp.text


async def test_lease_bodies_are_json_whatever_their_content_type(daemon: Daemon) -> None:
    acquire = await daemon.client.post("/leases", content=b'{"model": ""}', headers=headers(FORM))
    assert acquire.status_code == 422 and acquire.json()["problems"][0]["field"] == "model"
    renew = await daemon.client.post("/leases/nope/renew", content=b'{"ttl_s": -1}', headers=headers(FORM))
    assert renew.status_code == 422 and renew.json()["problems"][0]["field"] == "ttl_s"
    # the renew body is optional: none at all is not a validation error
    empty = await daemon.client.post("/leases/nope/renew", headers=headers(FORM))
    assert empty.status_code == 404, empty.text


async def test_the_openapi_schema_still_documents_the_json_bodies(daemon: Daemon) -> None:
    paths = (await daemon.client.get("/openapi.json")).json()["paths"]
    for path, model in (
        ("/model-stacks/switch", "SwitchRequest"),
        ("/leases", "LeaseRequest"),
    ):
        body = paths[path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
