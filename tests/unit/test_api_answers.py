"""Every control-API answer has the shape its route documents: each answer of the in-memory daemon
is checked against the schema in its own /openapi.json (not against the model, so the document
itself is what is tested), and the CLI's client checks what it reads with the same models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from stackd.api import answers
from stackd.cli.client import DaemonError, check_answer
from tests.unit.test_api import AUTH, Daemon, start
from tests.unit.test_manager_world import make_world


@pytest.fixture
async def daemon(tmp_path: Any) -> AsyncIterator[Daemon]:
    world = make_world(tmp_path)
    d = await start(world, tmp_path)
    yield d
    await d.client.aclose()
    for m in world.managers:
        await m.aclose()
        m.store.close()


def documented_schema(document: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def check(document: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    jsonschema.Draft202012Validator(documented_schema(document, method, path, status)).validate(body)


async def test_every_control_answer_has_its_documented_shape(daemon: Daemon) -> None:
    c = daemon.client
    document = (await c.get("/openapi.json", headers=AUTH)).json()
    calls: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
        ("get", "/model-stacks", "/model-stacks", None, 200),
        ("get", "/model-stacks/ollama-only", "/model-stacks/{name}", None, 200),
        (
            "post",
            "/model-stacks/switch",
            "/model-stacks/switch",
            {"stack": "ollama-only", "dry_run": True},
            200,
        ),
        ("post", "/model-stacks/switch", "/model-stacks/switch", {"stack": "ollama-only"}, 200),
        ("get", "/roles", "/roles", None, 200),
        ("get", "/roles/orchestrator", "/roles/{role}", None, 200),
        ("get", "/status", "/status", None, 200),
        ("get", "/usage", "/usage", None, 200),
        ("get", "/leases", "/leases", None, 200),
        ("post", "/config/reload", "/config/reload", None, 200),
        (
            "post",
            "/model-stacks/switch",
            "/model-stacks/switch",
            {"stack": "cloud-offload", "wait": False},
            202,
        ),
    ]
    switch_id = ""
    for method, url, path, body, status in calls:
        response = await c.request(method.upper(), url, json=body, headers=AUTH)
        assert response.status_code == status, (url, response.text)
        check(document, method, path, status, response.json())
        switch_id = response.json().get("switch_id", switch_id)
    answer = (await c.get(f"/model-stacks/switch/{switch_id}", headers=AUTH)).json()
    check(document, "get", "/model-stacks/switch/{switch_id}", 200, answer)


async def test_a_shape_the_document_does_not_describe_is_refused(daemon: Daemon) -> None:
    document = (await daemon.client.get("/openapi.json", headers=AUTH)).json()
    body = (await daemon.client.get("/status", headers=AUTH)).json()
    check(document, "get", "/status", 200, {**body, "router": {"added": "by another part"}})  # open
    for broken in ({k: v for k, v in body.items() if k != "members"}, {**body, "roles_version": "3"}):
        with pytest.raises(jsonschema.ValidationError):
            check(document, "get", "/status", 200, broken)


def test_the_client_checks_an_answer_with_the_routes_model() -> None:
    good = {"reloaded": "/etc/stackd.yaml", "stacks": ["a"], "later": True}
    assert check_answer(good, answers.ReloadAnswer, "POST /config/reload") is good
    with pytest.raises(
        DaemonError, match=r"POST /config/reload: the daemon's answer .*\(stacks: Field required\)"
    ):
        check_answer({"reloaded": "/etc/stackd.yaml"}, answers.ReloadAnswer, "POST /config/reload")


async def test_a_switch_is_answered_as_the_manager_made_it(daemon: Daemon) -> None:
    """GET /model-stacks/switch/{id} serves the manager's SwitchAnswer: the same keys in the same
    order (the JSON the dicts wrote before), a live switch without ``journal_state``."""
    c = daemon.client
    done = await c.post("/model-stacks/switch", json={"stack": "ollama-only"}, headers=AUTH)
    switch_id = done.json()["switch_id"]
    response = await c.get(f"/model-stacks/switch/{switch_id}", headers=AUTH)
    answer = response.json()
    assert list(answer) == [
        "switch_id", "kind", "stack", "from_stack", "state", "error", "note", "plan", "steps_done",
        "failed_step", "undone", "degraded", "events", "started_at", "finished_at",
    ]  # fmt: skip
    assert answer["state"] == "succeeded" and answer["stack"] == "ollama-only" and answer["events"]
    assert answers.SwitchAnswer.model_validate(answer).to_json() == answer  # the CLI parses the same class
