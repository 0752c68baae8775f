"""The daemon's HTTP server settings: what a slow or idle client may hold, and for how long.

uvicorn closes a keep-alive connection that stays idle after an answer (``timeout_keep_alive``),
but not one that never completes its first request: a client that connects and sends nothing,
or sends a header line every few seconds (slowloris), keeps its socket forever. 1,100 such
connections took every file descriptor of a daemon under the default limit of 1,024, and
``/healthz`` stopped answering. Three bounds close that:

- a **request deadline**: from the moment a connection is accepted, or its last answer sent, a
  client has ``request_read_timeout_s`` to deliver a whole request, headers and body; then the
  connection is closed. A request already received is never cut: the deadline is off while the
  daemon works on it and while it streams the answer.
- a **connection cap** (``limit_concurrency``) below the descriptor limit: a connection past it
  is answered 503 and closed as soon as it is accepted, so descriptors never run out (at the
  limit, accepts fail and uvloop resets what waits in the backlog, ``/healthz`` included). Each
  request in flight may hold two descriptors (the client's, a backend's), and some are kept for
  the database, the engines and the logs.
- a **fair share** of that cap: one client address holds at most a quarter of it, the last
  ``HEALTH_RESERVE`` places are the host's own health checks', and past its room a newcomer takes
  the place of an idle connection of the address that holds the most (``_admit``).
- a **higher descriptor limit**: the soft ``RLIMIT_NOFILE`` is raised to the hard one (at most
  ``WANTED_FDS``), as Go's runtime and nginx do; the systemd unit sets ``LimitNOFILE=65536``.
"""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from stackd.api.errors import raw_http_answer
from stackd.api.listener import BACKLOG
from stackd.errors import StackdError

REQUEST_READ_TIMEOUT_S = 15.0
KEEP_ALIVE_S = 5
WANTED_FDS = 65536
PEER_SHARE = 4  # one client address holds at most a quarter of the connection cap ...
PEER_MIN = 16  # ... and never fewer than this
HEALTH_RESERVE = 16  # connections only the host's own health checks (127.0.0.1, ::1) may take
HEALTH_PEERS = frozenset({"127.0.0.1", "::1"})
RESERVED_FDS = 256  # the database, engine pipes and logs, Docker's socket, the listening socket


class TooManyConnections(StackdError):
    """A connection past the server's cap (503, ``Retry-After: 1``), answered as it is accepted."""

    status = 503


OVER_CAPACITY = raw_http_answer(
    TooManyConnections("too many connections; try again shortly", retry_after_s=1)
)


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request (see the module)."""

    request_read_timeout_s = REQUEST_READ_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None  # fires at or before ``_deadline_at``
        self._deadline_at: float | None = None  # None: no request is being read
        self._received = self._answered = 0
        super().connection_made(transport)
        cap = self.limit_concurrency
        self._peer: str | None = None
        if cap is not None:
            peer = self.client[0] if self.client else ""
            peers: dict[str, set[DeadlineHttpToolsProtocol]] = self.server_state.__dict__.setdefault(
                "stackd_peers", {}
            )
            if not self._admit(peer, peers, cap):
                # Answered and closed at once: the descriptor is back before it can be held idle,
                # and the daemon's own (database, backends) stay free.
                transport.write(OVER_CAPACITY)
                transport.close()
                return
            peers.setdefault(peer, set()).add(self)
            self._peer = peer
        self._arm()

    def _admit(self, peer: str, peers: dict[str, set[DeadlineHttpToolsProtocol]], cap: int) -> bool:
        """Whether a new connection from ``peer`` may stay (issue 26, item 5): one peer holds at
        most a share of the cap; the last ``HEALTH_RESERVE`` places are the host's own health
        checks'; past its room, a newcomer takes the place of an idle connection of the peer that
        holds the most, so a flood from a few addresses cannot shut out everyone else."""
        if len(peers.get(peer, ())) >= max(PEER_MIN, cap // PEER_SHARE):
            return False
        room = cap if peer in HEALTH_PEERS else cap - HEALTH_RESERVE
        if len(self.connections) <= room:
            return True
        heaviest = max(peers, key=lambda p: len(peers[p]), default=None)
        if heaviest is None or len(peers[heaviest]) <= len(peers.get(peer, ())) + 1:
            return False  # the newcomer's own address holds as many: no one to shed for it
        idle = next((c for c in peers[heaviest] if c._idle()), None)
        if idle is None:
            return False
        idle.transport.close()  # its connection_lost gives the place back
        return True

    def _idle(self) -> bool:
        """No request of this connection is being served (it may be sending one, slowly)."""
        return self._answered >= self._received and not self.transport.is_closing()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline_at is None:  # a pipelined request begins while the last one is served
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._received += 1
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._answered += 1
        if self._answered >= self._received and not self.transport.is_closing():
            self._arm()  # waiting for the next request (uvicorn's keep-alive timer runs too)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if getattr(self, "_peer", None) is not None:
            peers: dict[str, set[DeadlineHttpToolsProtocol]] = self.server_state.__dict__.get(
                "stackd_peers", {}
            )
            held = peers.get(self._peer or "", set())
            held.discard(self)
            if not held:
                peers.pop(self._peer or "", None)
            self._peer = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        """The request deadline from now. Lazily: a timer is made only when none is pending (at most
        one per ``request_read_timeout_s``); one that fires early sets itself for the deadline in
        force. A timer made and cancelled per request cost the daemon ~2 µs of each call."""
        self._deadline_at = at = self.loop.time() + self.request_read_timeout_s
        if self._deadline is None:
            self._deadline = self.loop.call_at(at, self._deadline_passed)

    def _disarm(self) -> None:
        self._deadline_at = None  # a pending timer finds nothing due

    def _deadline_passed(self) -> None:
        self._deadline = None
        at = self._deadline_at
        if at is None:
            return
        if self.loop.time() < at:  # armed again since this timer was made
            self._deadline = self.loop.call_at(at, self._deadline_passed)
            return
        self._deadline_at = None
        if not self.transport.is_closing():
            self.transport.close()


def raise_fd_limit(wanted: int = WANTED_FDS) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``wanted`` (never above the hard limit, never
    lower than it is); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a container may refuse: the cap below follows the limit in force
    return soft


def connection_cap(fd_limit: int) -> int:
    """Connections served at once under ``fd_limit`` descriptors (each may hold a backend's too)."""
    return max(16, (fd_limit - RESERVED_FDS) // 2)


def server_config(
    app: Any, request_read_timeout_s: float = REQUEST_READ_TIMEOUT_S, **options: Any
) -> uvicorn.Config:
    """uvicorn's config for the daemon: the request deadline, the keep-alive timeout and a
    connection cap under the (raised) descriptor limit. ``options`` go to ``uvicorn.Config``."""
    protocol = type(
        "DaemonHttpProtocol", (DeadlineHttpToolsProtocol,), {"request_read_timeout_s": request_read_timeout_s}
    )
    return uvicorn.Config(
        app,
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=connection_cap(raise_fd_limit()),
        backlog=BACKLOG,
        **options,
    )


class DaemonServer(uvicorn.Server):
    """uvicorn's server, which first calls each of ``closers`` when it stops: uvicorn waits for
    every open response to end before the app's lifespan shutdown, and an endless one (the
    status page's event stream, a followed log) would hold the daemon up until a second signal."""

    def __init__(self, config: uvicorn.Config, closers: Sequence[Callable[[], None]] = ()) -> None:
        super().__init__(config)
        self._closers = tuple(closers)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for close in self._closers:
            close()
        await super().shutdown(sockets)
