"""The docker SDK, loaded only once a Docker engine is there to talk to.

The SDK (docker, requests, urllib3: ~6 MiB of the daemon's memory and ~180 modules,
docs/benchmarks.md "Idle memory") is imported by the first client made, not by the drivers'
modules. Before that, ``from_env`` connects to the engine's unix socket with a plain socket: on
a machine without Docker (the bundled config's first start asks Docker while it picks a fallback
stack) the daemon learns so without the SDK, and the error carries the same OS reason the SDK's
would ("No such file or directory", "Permission denied", "Connection refused").

``unreachable`` and ``refused`` sort an exception of a client call without importing the SDK
when it was never loaded (then nothing of it can have been raised).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docker import DockerClient

DEFAULT_HOST = "unix:///var/run/docker.sock"  # the SDK's default when DOCKER_HOST is unset
CONNECT_TIMEOUT_S = 2.0


class NoEngine(OSError):
    """The engine's unix socket is absent or refuses a connection (raised before the SDK loads)."""


def engine_socket(env: Mapping[str, str] | None = None) -> str | None:
    """The path of the engine's unix socket (``DOCKER_HOST`` or the default), or None when the
    engine is reached another way (``tcp://``, ``ssh://``): the SDK is asked directly then."""
    host = (os.environ if env is None else env).get("DOCKER_HOST") or DEFAULT_HOST
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def check_socket(path: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``NoEngine`` unless something accepts a connection on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout_s)
        try:
            probe.connect(path)
        except OSError as exc:
            raise NoEngine(exc.errno, exc.strerror or str(exc)) from exc


def from_env() -> DockerClient:
    """``docker.from_env()`` (blocking: call it in a worker thread), once the socket answers."""
    path = engine_socket()
    if path is not None:
        check_socket(path)
    import docker

    return docker.from_env()


def refused(exc: BaseException) -> bool:
    """The engine answered and said no (the SDK's ``APIError``: not found, conflict, bad spec)."""
    errors = sys.modules.get("docker.errors")
    return errors is not None and isinstance(exc, errors.APIError)


def unreachable(exc: BaseException) -> bool:
    """The engine is absent, down or was restarted: ``NoEngine``, or one of the SDK's
    connection errors (a new client is made next time)."""
    if isinstance(exc, NoEngine):
        return True
    errors, requests = sys.modules.get("docker.errors"), sys.modules.get("requests.exceptions")
    if errors is None or refused(exc):
        return False
    kinds: tuple[type[BaseException], ...] = (errors.DockerException,)
    if requests is not None:
        kinds += (requests.RequestException,)
    return isinstance(exc, kinds)
