"""The daemon's own listening socket: bound first, and a port in use says who holds it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stackd.api.listener import CannotListen, PortInUse, bind_listener, holder_of, listen_url
from stackd.errors import Conflict

HEALTH = {
    "status": "ok",
    "version": "0.1.0",
    "url": "http://127.0.0.1:8001",
    "pid": 1234,
    "state_dir": "/x/state",
}


class _Healthz(BaseHTTPRequestHandler):
    body: dict[str, Any] = HEALTH

    def do_GET(self) -> None:
        data = json.dumps(self.body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serving(body: dict[str, Any]) -> Iterator[int]:
    handler = type("Handler", (_Healthz,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def stackd_port() -> Iterator[int]:
    yield from serving(HEALTH)


@pytest.fixture
def remote_stackd_port() -> Iterator[int]:
    yield from serving({"status": "ok", "version": "0.1.0"})  # what /healthz says off loopback


@pytest.fixture
def other_program_port() -> Iterator[int]:
    yield from serving({"hello": "world"})


def test_the_socket_is_bound_and_listening() -> None:
    with bind_listener("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the kernel accepts before anyone serves: uvicorn takes over this socket


def test_a_port_held_by_a_stackd_names_its_pid_url_and_state_dir(stackd_port: int) -> None:
    with pytest.raises(PortInUse) as refused:
        bind_listener("127.0.0.1", stackd_port)
    assert isinstance(refused.value, Conflict)
    assert refused.value.message == (
        f"port {stackd_port} on 127.0.0.1 is in use by stackd pid 1234 (http://127.0.0.1:8001, "
        "state /x/state); stop it first or pass --port"
    )


def test_a_stackd_off_loopback_is_named_without_its_pid(remote_stackd_port: int) -> None:
    assert holder_of("127.0.0.1", remote_stackd_port) == (
        "by a stackd 0.1.0 (it tells its PID only on loopback)"
    )


def test_a_listener_that_does_not_answer_may_be_a_stackd_still_starting() -> None:
    with socket.socket() as silent:  # listens, never accepts: as a daemon in its recovery
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        assert holder_of("127.0.0.1", port, timeout_s=0.2) == (
            "by a process that did not answer GET /healthz in 0.2 s (a stackd still starting?)"
        )


def test_a_port_held_by_a_program_that_is_no_stackd(other_program_port: int) -> None:
    assert holder_of("0.0.0.0", other_program_port) == "by another program"  # any-address: ask loopback
    with pytest.raises(PortInUse, match=r"in use by another program; stop it first or pass --port"):
        bind_listener("127.0.0.1", other_program_port)


def test_an_address_not_on_this_machine_cannot_be_listened_on() -> None:
    with pytest.raises(CannotListen, match=r"cannot listen on 192\.0\.2\.1:8001: .*pass another --host"):
        bind_listener("192.0.2.1", 8001)  # TEST-NET-1, never assigned to a host


def test_an_ipv6_url_has_brackets() -> None:
    assert listen_url("::1", 8001) == "http://[::1]:8001"
    assert listen_url("127.0.0.1", 8001) == "http://127.0.0.1:8001"
