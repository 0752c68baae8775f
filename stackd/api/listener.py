"""The daemon's listening socket, bound before anything else happens.

uvicorn binds its port only after the app's lifespan has run, and the lifespan applies a stack:
a second daemon on a taken port would start and stop engines before it failed. The daemon
therefore binds the socket itself, first, and hands it to uvicorn (``Server.run(sockets=...)``).

A port in use is reported with who holds it: when the holder answers ``GET /healthz`` as a
stackd, the message names its PID, URL and state dir.
"""

from __future__ import annotations

import errno
import socket

from stackd.errors import Conflict, StackdError

BACKLOG = 2048  # uvicorn's default
PROBE_TIMEOUT_S = 2.0


class PortInUse(Conflict):
    """Another process listens on the port."""


class CannotListen(StackdError):
    """The daemon cannot listen on its host and port for another reason (an address not here)."""


def listen_url(host: str, port: int) -> str:
    """``http://HOST:PORT``, an IPv6 literal in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, for uvicorn to serve on.

    Raises ``PortInUse`` (naming the stackd that holds the port, when one does) or
    ``CannotListen`` (an address not on this machine, a privileged port)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn does: a restart may bind while the last run's connections sit in TIME_WAIT. On
    # Linux this never lets two sockets listen on one port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is in use {holder_of(host, port)}; stop it first or pass --port",
                host=host,
                port=port,
            ) from None
        raise CannotListen(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --host or --port",
            host=host,
            port=port,
        ) from exc
    return sock


def holder_of(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Who listens on ``host:port``, as the rest of a sentence: ``by stackd pid 12 (URL, state
    DIR)``, ``by a stackd`` (off loopback it does not say more), ``by another program``, or one
    that did not answer in time."""
    import httpx  # only when the port is taken: the daemon itself does not load it

    probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        answer = httpx.get(f"{listen_url(probe, port)}/healthz", timeout=timeout_s)
        health = answer.json() if answer.status_code == 200 else None
    except httpx.TimeoutException:
        # A stackd accepts connections from its bind on but answers once its recovery is done.
        return f"by a process that did not answer GET /healthz in {timeout_s:g} s (a stackd still starting?)"
    except (httpx.HTTPError, ValueError):
        health = None
    if not isinstance(health, dict) or "version" not in health:
        return "by another program"
    if not health.get("pid"):
        return f"by a stackd {health['version']} (it tells its PID only on loopback)"
    return f"by stackd pid {health['pid']} ({health.get('url')}, state {health.get('state_dir')})"
