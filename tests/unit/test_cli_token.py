"""The CLI finds the token of the daemon it talks to, and says which daemon refused which token.

The client runs over an ``httpx.MockTransport`` that plays a daemon as the CLI sees it: an open
``/healthz`` naming its state dir, and every other route wanting its bearer token. ``/healthz``
itself is checked on the real status router.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from stackd import __version__
from stackd.api.auth import open_guard
from stackd.api.status import build_status_router
from stackd.cli.client import DaemonClient, Token, TokenRefused, find_token
from stackd.cli.render import daemon_header
from stackd.roles import LiveRoles
from stackd.services import Services
from stackd.settings import Settings
from tests.unit.test_manager_world import rtx5090_32g_workstation

URL = "http://127.0.0.1:8001"


def token_dir(path: Path, token: str | None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if token is not None:
        (path / "token").write_text(token + "\n")
    return path


@dataclass
class FakeDaemon:
    """A daemon whose state dir is ``state_dir`` and whose token is ``token``."""

    state_dir: Path
    token: str
    seen: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        self.seen.append(f"{request.method} {request.url.path} {auth}".strip())
        if request.url.path == "/healthz":
            return httpx.Response(
                200,
                json={
                    "status": "ok",
                    "version": "0.1.0",
                    "url": URL,
                    "pid": 4242,
                    "config": "/srv/stackd/model-stacks.yaml",
                    "state_dir": str(self.state_dir),
                    "token_source": str(self.state_dir / "token"),
                },
            )
        if auth != f"Bearer {self.token}":
            return httpx.Response(
                401, json={"error": "Unauthorized", "message": "missing or wrong bearer token"}
            )
        return httpx.Response(200, json={"ok": True})

    def client(self, tmp_path: Path, token: str | None = None, state_dir: Path | None = None) -> DaemonClient:
        """A CLI with an empty environment and an empty default state dir."""
        return DaemonClient.connect(
            URL,
            token,
            state_dir,
            transport=httpx.MockTransport(self.handle),
            env={},
            default_dir=token_dir(tmp_path / "default-state", None),
        )


@pytest.fixture
def fake(tmp_path: Path) -> FakeDaemon:
    return FakeDaemon(token_dir(tmp_path / "daemon-state", "daemon-secret"), "daemon-secret")


# ---------------------------------------------------------------- the order of discovery


def asked(calls: list[str], answer: str | None) -> Callable[[], str | None]:
    """A daemon's answer to "which state dir?", noting each time it is asked."""

    def daemon_state_dir() -> str | None:
        calls.append("healthz")
        return answer

    return daemon_state_dir


def test_the_token_flag_comes_first(tmp_path: Path) -> None:
    calls: list[str] = []
    env = {"STACKD_TOKEN": "from-env", "STACKD_STATE_DIR": str(token_dir(tmp_path / "env", "env-file"))}
    state = token_dir(tmp_path / "flag", "flag-file")
    assert find_token("from-flag", state, asked(calls, None), env) == Token("from-flag", "--token")
    assert calls == []


def test_the_state_dir_flag_beats_the_environment(tmp_path: Path) -> None:
    state = token_dir(tmp_path / "flag", "flag-file")
    env = {"STACKD_TOKEN": "from-env"}
    assert find_token(None, state, env=env) == Token("flag-file", str(state / "token"))


def test_stackd_token_beats_stackd_state_dir(tmp_path: Path) -> None:
    env = {"STACKD_TOKEN": "from-env", "STACKD_STATE_DIR": str(token_dir(tmp_path / "env", "env-file"))}
    assert find_token(env=env) == Token("from-env", "$STACKD_TOKEN")
    del env["STACKD_TOKEN"]
    assert find_token(env=env) == Token("env-file", str(tmp_path / "env" / "token"))


def test_with_nothing_given_the_daemon_names_its_state_dir(tmp_path: Path) -> None:
    calls: list[str] = []
    daemon = token_dir(tmp_path / "daemon", "daemon-file")
    default = token_dir(tmp_path / "default", "default-file")
    token = find_token(None, None, asked(calls, str(daemon)), {}, default)
    assert token == Token("daemon-file", str(daemon / "token"))
    assert calls == ["healthz"]


def test_the_default_state_dir_comes_last(tmp_path: Path) -> None:
    default = token_dir(tmp_path / "default", "default-file")
    assert find_token(None, None, asked([], None), {}, default) == Token(
        "default-file", str(default / "token")
    )
    unreadable = token_dir(tmp_path / "daemon", None)
    assert find_token(None, None, asked([], str(unreadable)), {}, default).value == "default-file"


def test_no_token_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    daemon = token_dir(tmp_path / "daemon", None)
    default = token_dir(tmp_path / "default", None)
    token = find_token(None, None, asked([], str(daemon)), {}, default)
    assert token.value is None
    assert str(daemon / "token") in token.source and str(default / "token") in token.source


# ---------------------------------------------------------------- over HTTP


def test_the_client_reads_the_token_of_the_state_dir_the_daemon_reports(
    tmp_path: Path, fake: FakeDaemon
) -> None:
    with fake.client(tmp_path) as client:
        assert client.post("/model-stacks/switch", {"stack": "x"}) == {"ok": True}
        assert client.token == Token("daemon-secret", str(fake.state_dir / "token"))
    assert fake.seen == ["GET /healthz", "POST /model-stacks/switch Bearer daemon-secret"]


def test_a_given_token_is_sent_without_asking_the_daemon(tmp_path: Path, fake: FakeDaemon) -> None:
    with fake.client(tmp_path, token="daemon-secret") as client:
        client.get("/status")
    assert fake.seen == ["GET /status Bearer daemon-secret"]


def test_a_refused_token_names_the_daemon_and_the_file_it_was_read_from(
    tmp_path: Path, fake: FakeDaemon
) -> None:
    other = token_dir(tmp_path / "other-daemon", "other-secret")
    with fake.client(tmp_path, state_dir=other) as client, pytest.raises(TokenRefused) as refused:
        client.post("/model-stacks/switch", {"stack": "x"})
    assert refused.value.message == (
        f"the daemon at {URL} refused the token read from {other / 'token'} "
        f"(it reads its own from {fake.state_dir / 'token'}); pass --token or --state-dir of that daemon"
    )
    assert refused.value.status == 401


def test_a_refused_token_flag_is_named_as_such(tmp_path: Path, fake: FakeDaemon) -> None:
    with fake.client(tmp_path, token="nope") as client, pytest.raises(TokenRefused) as refused:
        client.get("/leases")
    assert refused.value.message.startswith(f"the daemon at {URL} refused the token read from --token")


def test_no_token_found_says_where_it_looked(tmp_path: Path, fake: FakeDaemon) -> None:
    (fake.state_dir / "token").unlink()
    with fake.client(tmp_path) as client, pytest.raises(TokenRefused) as refused:
        client.get("/leases")
    message = refused.value.message
    assert message.startswith(f"the daemon at {URL} needs a token and none was found: ")
    assert str(fake.state_dir / "token") in message and message.endswith("--state-dir of that daemon")


def test_a_daemon_that_does_not_answer_healthz_leaves_the_default_dir(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    default = token_dir(tmp_path / "default", "default-file")
    with DaemonClient.connect(
        URL, transport=httpx.MockTransport(refuse), env={}, default_dir=default
    ) as client:
        assert client.health() == {}
        assert client.token.value == "default-file"


# ---------------------------------------------------------------- /healthz says which daemon this is


def services(tmp_path: Path, host: str) -> Services:
    return Services(
        settings=Settings(
            host=host, port=8123, config=tmp_path / "model-stacks.yaml", state_dir=tmp_path / "s"
        ),
        roles=LiveRoles(),
        manager=None,  # type: ignore[arg-type]  # /healthz reads only its active stack (None: no manager)
        read_hardware=rtx5090_32g_workstation,
        token="t",
        token_source=str(tmp_path / "s" / "token"),
        leases=None,  # type: ignore[arg-type]  # as the manager
    )


async def healthz(services: Services) -> dict[str, object]:
    app = FastAPI()
    app.include_router(build_status_router(services, open_guard, CollectorRegistry))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stackd") as client:
        resp = await client.get("/healthz")
    assert resp.status_code == 200
    return resp.json()


async def test_healthz_names_the_daemon_on_a_loopback_bind(tmp_path: Path) -> None:
    body = await healthz(services(tmp_path, "127.0.0.1"))
    assert body == {
        "status": "ok",
        "version": __version__,
        "stack_active": True,
        "url": "http://127.0.0.1:8123",
        "pid": os.getpid(),
        "config": str(tmp_path / "model-stacks.yaml"),
        "state_dir": str(tmp_path / "s"),
        "token_source": str(tmp_path / "s" / "token"),
    }


async def test_healthz_off_loopback_says_only_that_it_is_alive(tmp_path: Path) -> None:
    body = await healthz(services(tmp_path, "0.0.0.0"))
    assert {k: v for k, v in body.items() if v is not None} == {
        "status": "ok",
        "version": __version__,
        "stack_active": True,
    }


async def test_healthz_says_when_no_stack_is_active_on_any_bind(tmp_path: Path) -> None:
    """The image's HEALTHCHECK reads it: a daemon where no stack could run is not healthy."""
    for host in ("127.0.0.1", "0.0.0.0"):
        none_active = services(tmp_path, host)
        none_active.manager = SimpleNamespace(active_stack=None)  # type: ignore[assignment]
        assert (await healthz(none_active))["stack_active"] is False
        some_active = services(tmp_path, host)
        some_active.manager = SimpleNamespace(active_stack="embedded")  # type: ignore[assignment]
        assert (await healthz(some_active))["stack_active"] is True


def test_the_status_header_names_url_config_and_state_dir() -> None:
    header = daemon_header(
        {"url": URL, "pid": 4242, "version": "0.1.0", "config": "/srv/a.yaml", "state_dir": "/srv/state"}
    ).plain
    assert header.splitlines() == [
        f"daemon {URL}  pid 4242  stackd 0.1.0",
        "config /srv/a.yaml",
        "state dir /srv/state",
    ]
