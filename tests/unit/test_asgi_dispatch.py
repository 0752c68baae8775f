"""The front door (``stackd.api.dispatch``): the hot paths skip FastAPI, the token is checked
before any body is read, and bodies past their limit are answered 413, on every route.

The app is the daemon's (``create_app``) over in-memory engines and scripted backends; requests
are driven as raw ASGI, so each test sees exactly how many body bytes the app asked for."""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response

from stackd.api.app import create_app
from stackd.api.dispatch import FrontDoor
from stackd.api.request_body import BodyLimits
from stackd.config.models import StacksConfig
from stackd.drivers.memory import MemoryContainers, MemoryHealth, MemoryOllama, MemoryProcesses, MemoryRemotes
from stackd.gpu.leases import LeaseCoordinator
from stackd.hardware.types import HardwareSnapshot
from stackd.manager import ModelStackManager
from stackd.manager.seams import Drivers
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.types import (
    BackendError,
    ChatRequest,
    Completion,
    FailureKind,
    StreamEvent,
    StreamFinish,
    TextDelta,
    Usage,
)
from stackd.services import Services
from stackd.settings import MIB, Settings
from stackd.state.store import StateStore

TOKEN = "front-door-token-0123456789"
AUTH = [(b"authorization", f"Bearer {TOKEN}".encode())]
CHAT = {"model": "reason", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 8}
HARDWARE = HardwareSnapshot(
    gpus=(), ram_total_mib=8192, ram_available_mib=4096, cpu_count=2, gpu_source="none"
)


def front_door_config() -> StacksConfig:
    def model(name: str) -> dict[str, Any]:
        return {
            "runtime": "docker",
            "placement": "gpu",
            "api": "openai",
            "endpoint": f"http://{name}.invalid/v1",
            "docker": {"container": name},
        }

    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "roles": {"orchestrator": {"required": True}},
            "models": {"primary": model("primary"), "backup": model("backup")},
            "stacks": {"s": {"roles": {"orchestrator": "backup"}, "members": ["primary"]}},
            "reason": {
                "strategies": {"first": {"models": ["primary"]}, "second": {"models": ["backup"]}},
                "default_chain": ["first", "second"],
                "circuit": {"failure_threshold": 10**9, "cooldown_s": 600},
            },
        }
    )


class ScriptedBackend:
    """Answers at once; ``fails`` makes every call a refused connection; with a ``gate`` a call
    waits for it (``cancelled`` counts the calls cancelled meanwhile)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.request_model = name
        self.fails = False
        self.gate: asyncio.Event | None = None
        self.cancelled = 0

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def complete(self, request: ChatRequest) -> Completion:
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.fails:
            raise BackendError(FailureKind.refused, f"cannot connect to {self.name}")
        return Completion("Rayleigh scattering.", "stop", Usage(10, 3))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        if self.fails:
            raise BackendError(FailureKind.refused, f"cannot connect to {self.name}")
        for word in ("Rayleigh ", "scattering."):
            yield TextDelta(word)
        yield StreamFinish("stop", Usage(10, 2))


@dataclass
class Daemon:
    app: FastAPI
    router: ReasonRouter
    store: StateStore
    backends: dict[str, ScriptedBackend] = field(default_factory=dict)


def build_daemon(
    tmp_path: Path, load_config: Callable[[], StacksConfig] | None = None, **settings: Any
) -> Daemon:
    """The daemon's app as ``create_app`` builds it, engines in memory, backends scripted."""
    config = front_door_config()
    stack = config.stacks["s"]
    roles = LiveRoles(RoleTable("s", dict(stack.roles), frozenset(stack.member_names)))
    backends = {name: ScriptedBackend(name) for name in config.models}
    router = ReasonRouter(config, roles, backend_factory=lambda name, session: backends[name])
    store = StateStore(tmp_path / "stackd.db")
    drivers = Drivers(MemoryContainers(), MemoryProcesses(), MemoryOllama(), MemoryRemotes(), MemoryHealth())
    manager = ModelStackManager(config, store, drivers, roles, lambda: HARDWARE)
    services = Services(
        settings=Settings(state_dir=tmp_path / "state", **settings), roles=roles, manager=manager,
        read_hardware=lambda: HARDWARE, token=TOKEN, token_source="test", leases=LeaseCoordinator(manager),
        router=router,
    )  # fmt: skip
    return Daemon(create_app(services, load_config=load_config), router, store, backends)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = build_daemon(tmp_path)
    yield d
    await d.router.aclose()
    await d.app.state.services.manager.aclose()
    d.store.close()


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    body_bytes_read: int  # how many bytes of the request body the app asked for

    def json(self) -> Any:
        return json.loads(self.body)


def chunks_of(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def call(
    app: Callable[..., Awaitable[None]],
    method: str,
    path: str,
    body: Iterator[bytes] | bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    content_length: int | None = None,
) -> Answer:
    """One request as uvicorn hands it over: ``body`` is delivered chunk by chunk, only as the
    app asks (an iterator may be far larger than memory would allow: it is never materialised)."""
    if isinstance(body, bytes):
        content_length = len(body) if content_length is None else content_length
        body = chunks_of(body) if body else iter(())
    all_headers = [(b"host", b"stackd"), (b"content-type", b"application/json"), *(headers or [])]
    if content_length is not None:
        all_headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": all_headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8001),
    }  # fmt: skip
    read = 0
    pending: bytes | None = next(body, b"")  # an empty body is one empty message, as uvicorn sends it
    answered = False

    async def receive() -> dict[str, Any]:
        nonlocal read, pending
        if pending is None:
            if answered:
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # a client that keeps the connection open
        chunk, pending = pending, next(body, None)
        assert chunk is not None
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pending is not None}

    status, response_headers, parts = 0, {}, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, response_headers, answered
        if message["type"] == "http.response.start":
            status, response_headers = message["status"], dict(message.get("headers", []))
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            answered = not message.get("more_body", False)

    await app(scope, receive, send)
    return Answer(status, response_headers, b"".join(parts), read)


# ---------------------------------------------------------------- the hot paths skip FastAPI
async def test_the_hot_paths_never_enter_fastapis_middleware_and_the_control_api_does(daemon: Daemon) -> None:
    seen: list[str] = []

    @daemon.app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        seen.append(request.url.path)
        return await call_next(request)

    chat = await call(daemon.app, "POST", "/v1/chat/completions", json.dumps(CHAT).encode(), AUTH)
    assert chat.status == 200 and chat.json()["choices"][0]["message"]["content"] == "Rayleigh scattering."
    tools = await call(daemon.app, "POST", "/tools/reason", json.dumps({"problem": "why?"}).encode(), AUTH)
    assert tools.status == 200 and tools.json()["answer"] == "Rayleigh scattering."
    models = await call(daemon.app, "GET", "/v1/models", headers=AUTH)
    assert models.status == 200 and models.json()["object"] == "list"
    assert seen == []
    assert (await call(daemon.app, "GET", "/model-stacks")).status == 200
    assert seen == ["/model-stacks"]


async def test_a_hot_path_with_another_method_or_head_is_fastapis_answer(daemon: Daemon) -> None:
    assert (await call(daemon.app, "GET", "/v1/chat/completions", headers=AUTH)).status == 405
    assert (await call(daemon.app, "HEAD", "/v1/models", headers=AUTH)).status in (200, 405)


async def test_the_hot_paths_stream_through_the_front_door(daemon: Daemon) -> None:
    answer = await call(
        daemon.app, "POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}).encode(), AUTH
    )
    assert answer.status == 200 and answer.headers[b"content-type"] == b"text/event-stream"
    assert answer.body.endswith(b"data: [DONE]\n\n") and b"Rayleigh " in answer.body


@pytest.mark.parametrize(("path", "shape"), [("/v1/chat/completions", "openai"), ("/tools/reason", "stackd")])
async def test_a_bug_on_a_hot_path_is_a_500_in_the_routes_shape_that_repeats_nothing(
    path: str, shape: str
) -> None:
    async def buggy(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("a bug quoting http://user:s3cret@upstream")

    async def control_api(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a hot path never reaches the control API")

    door = FrontDoor(control_api, {("POST", path): buggy}, lambda request: None, BodyLimits(MIB, 16 * MIB))
    answer = await call(door, "POST", path, json.dumps(CHAT).encode(), AUTH)
    assert answer.status == 500 and b"s3cret" not in answer.body
    error = answer.json()["error"]
    assert error["type"] == "server_error" if shape == "openai" else error == "InternalError"


async def test_a_client_that_leaves_through_the_front_door_cancels_the_backend_call(daemon: Daemon) -> None:
    daemon.backends["primary"].gate = asyncio.Event()
    body = json.dumps(CHAT).encode()
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body, "more_body": False},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []
    headers = [(b"content-type", b"application/json"), *AUTH, (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}

    async def receive() -> dict[str, Any]:
        if len(messages) == 1:
            await asyncio.sleep(0.05)  # the client leaves while the backend still works
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await asyncio.wait_for(daemon.app(scope, receive, send), 5)
    assert daemon.backends["primary"].cancelled == 1 and sent == []


# ---------------------------------------------------------------- the token before the body
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/model-stacks/switch"),
        ("POST", "/config/reload"),
        ("POST", "/leases"),
        ("POST", "/leases/abc/renew"),
        ("DELETE", "/leases/abc"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/tools/reason"),
    ],
)
async def test_unauthenticated_malformed_json_is_401_not_422_and_its_body_is_never_read(
    daemon: Daemon, method: str, path: str
) -> None:
    answer = await call(daemon.app, method, path, b'{"stack": "cloud-', [(b"authorization", b"Bearer wrong")])
    assert answer.status == 401, answer.body
    assert answer.headers[b"www-authenticate"] == b"Bearer"
    assert answer.body_bytes_read == 0


async def test_an_unauthenticated_100_mb_body_is_refused_401_unread_and_memory_stays_flat(
    daemon: Daemon,
) -> None:
    size = 100 * MIB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for path in ("/model-stacks/switch", "/v1/chat/completions"):
        body = (b"x" * (64 * 1024) for _ in range(size // (64 * 1024)))
        answer = await call(daemon.app, "POST", path, body, content_length=size)
        assert answer.status == 401 and answer.body_bytes_read == 0
        chunked = (b"x" * (64 * 1024) for _ in range(size // (64 * 1024)))  # no Content-Length
        answer = await call(daemon.app, "POST", path, chunked)
        assert answer.status == 401 and answer.body_bytes_read == 0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 20, f"peak RSS grew {grown_mib:.0f} MiB"


async def test_the_control_apis_401_closes_the_connection_so_the_body_is_not_uploaded(daemon: Daemon) -> None:
    answer = await call(daemon.app, "POST", "/model-stacks/switch", b"{}", content_length=10**8)
    assert answer.status == 401 and answer.headers[b"connection"] == b"close"


async def test_the_control_apis_401_to_a_small_body_keeps_the_connection_open_and_the_body_unread(
    daemon: Daemon,
) -> None:
    """Closing under a body still in flight resets the connection, and the client can lose the
    401 itself: a body within the limit is left to the server to drop, on an open connection."""
    answer = await call(daemon.app, "POST", "/model-stacks/switch", b'{"stack": "x"}' + b" " * 8000)
    assert answer.status == 401 and b"connection" not in answer.headers
    assert answer.body_bytes_read == 0
    chunked = await call(daemon.app, "POST", "/model-stacks/switch", iter([b"{}"]))  # length unknown
    assert chunked.status == 401 and chunked.headers[b"connection"] == b"close"


# ---------------------------------------------------------------- bounded bodies
async def test_a_control_body_past_its_limit_is_413_before_it_is_read(daemon: Daemon) -> None:
    body = b"x" * (64 * 1024)
    declared = await call(
        daemon.app, "POST", "/model-stacks/switch", iter([body]), AUTH, content_length=MIB + 1
    )
    assert declared.status == 413 and declared.body_bytes_read == 0
    assert declared.json()["error"] == "BodyTooLarge" and declared.json()["limit_bytes"] == MIB


async def test_a_chunked_control_body_is_read_up_to_its_limit_then_413(daemon: Daemon) -> None:
    size = 50 * MIB
    chunked = (b"x" * (64 * 1024) for _ in range(size // (64 * 1024)))
    answer = await call(daemon.app, "POST", "/model-stacks/switch", chunked, AUTH)
    assert answer.status == 413
    assert MIB < answer.body_bytes_read <= MIB + 64 * 1024


async def test_a_control_body_within_its_limit_reaches_the_route(daemon: Daemon) -> None:
    body = json.dumps({"stack": "s", "dry_run": True}).encode()
    answer = await call(daemon.app, "POST", "/model-stacks/switch", body, AUTH)
    assert answer.status == 200 and answer.json()["dry_run"] is True
    chunked = await call(daemon.app, "POST", "/model-stacks/switch", iter([body[:5], body[5:]]), AUTH)
    assert chunked.status == 200 and chunked.json()["dry_run"] is True
    malformed = await call(daemon.app, "POST", "/model-stacks/switch", b'{"stack": ', AUTH)
    assert malformed.status == 422  # with the token, a bad body is the usual 422


async def test_a_get_declaring_a_huge_body_is_413_and_a_small_one_is_served(daemon: Daemon) -> None:
    assert (await call(daemon.app, "GET", "/model-stacks", b"", content_length=10**9)).status == 413
    assert (await call(daemon.app, "GET", "/model-stacks", b"{}")).status == 200


async def test_the_gateway_takes_bodies_past_the_control_limit_up_to_its_own(daemon: Daemon) -> None:
    long_prompt = {**CHAT, "messages": [{"role": "user", "content": "x" * (4 * MIB)}]}
    answer = await call(daemon.app, "POST", "/v1/chat/completions", json.dumps(long_prompt).encode(), AUTH)
    assert answer.status == 200
    too_long = b"x" * (64 * 1024)
    declared = await call(daemon.app, "POST", "/v1/chat/completions", iter([too_long]), AUTH, 16 * MIB + 1)
    assert declared.status == 413 and declared.body_bytes_read == 0
    assert declared.json()["error"]["message"].startswith("request body over 16,777,216 bytes")
    chunked = (b"x" * (64 * 1024) for _ in range(17 * 16))  # 17 MiB, no Content-Length
    tools = await call(daemon.app, "POST", "/tools/reason", chunked, AUTH)
    assert tools.status == 413 and tools.json()["error"] == "BodyTooLarge"
    assert tools.body_bytes_read <= 16 * MIB + 64 * 1024


async def test_the_limits_are_settings(tmp_path: Path) -> None:
    d = build_daemon(tmp_path, max_body_bytes=100, max_gateway_body_bytes=1000)
    try:
        body = json.dumps({"stack": "s", "dry_run": True, "wait": True, "padding": "x" * 100}).encode()
        assert (await call(d.app, "POST", "/model-stacks/switch", body, AUTH)).status == 413
        chat = {**CHAT, "messages": [{"role": "user", "content": "x" * 1000}]}
        assert (
            await call(d.app, "POST", "/v1/chat/completions", json.dumps(chat).encode(), AUTH)
        ).status == 413
        assert (
            await call(d.app, "POST", "/v1/chat/completions", json.dumps(CHAT).encode(), AUTH)
        ).status == 200
    finally:
        await d.router.aclose()
        d.store.close()
