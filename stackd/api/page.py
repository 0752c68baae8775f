"""The live status page: ``GET /`` and its two files, and ``GET /status/events`` that feeds it.

The page is plain HTML, CSS and JavaScript shipped in the package (``stackd/api/page_assets/``): no
build step, no CDN, nothing fetched from elsewhere (its Content-Security-Policy allows only the
daemon itself). The page and its files need no token: they hold no data. ``/status/events``
has ``/status``'s rule (open on a loopback bind, the token everywhere else), and the page's
switch button and lease release send the token the user typed, from the browser's
sessionStorage, as an ``Authorization`` header; it never appears in a URL.

``/status/events`` is an SSE stream of ``status`` events, each the whole ``page_snapshot``
(``stackd.api.page_view``), sent when it changed; a comment line keeps an idle stream alive.
One ``StatusFeed`` computes the snapshot for every follower, once a second (four times a second
while a switch runs), and only while someone follows. The stream never ends by itself, so the
daemon closes the feed before uvicorn waits for open responses at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources

from fastapi import APIRouter, Depends, Response
from fastapi.responses import StreamingResponse

from stackd.api.page_view import PageSnapshot, page_snapshot
from stackd.api.status import daemon_status
from stackd.planner.views import stack_json
from stackd.services import Services

log = logging.getLogger("stackd.api")

INTERVAL_S = 1.0
BUSY_INTERVAL_S = 0.25
KEEPALIVE_S = 15.0
SWITCHES_SHOWN = 8
CALLS_SHOWN = 12
LOG_LINES_READ = 60
FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

Snapshot = Callable[[], Awaitable[Mapping[str, object]]]  # a JSON object


class StatusFeed:
    """One producer of snapshots for every follower of the stream.

    ``follow`` yields the latest snapshot's JSON at once, then each new one (``None`` after
    ``keepalive_s`` without one: the caller sends a comment), and ends after ``close``. The
    producer runs only while at least one follower is there; a snapshot that raises is logged
    and the previous one stays. ``busy()`` says when to poll faster (a switch runs)."""

    def __init__(
        self,
        snapshot: Snapshot,
        busy: Callable[[], bool] = lambda: False,
        interval_s: float = INTERVAL_S,
        busy_interval_s: float = BUSY_INTERVAL_S,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self._snapshot = snapshot
        self._busy = busy
        self._interval_s = interval_s
        self._busy_interval_s = busy_interval_s
        self._keepalive_s = keepalive_s
        self._latest: str | None = None
        self._version = 0
        self._changed = asyncio.Event()
        self._followers = 0
        self._producer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def followers(self) -> int:
        return self._followers

    async def follow(self) -> AsyncGenerator[str | None, None]:
        self._followers += 1
        if self._producer is None or self._producer.done():
            self._producer = asyncio.get_running_loop().create_task(
                self._produce(), name="stackd-status-feed"
            )
        seen = 0
        try:
            while not self._closed:
                if self._version != seen and self._latest is not None:
                    seen = self._version
                    yield self._latest
                    continue
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), self._keepalive_s)
                except TimeoutError:
                    yield None
        finally:
            self._followers -= 1
            if self._followers == 0 and self._producer is not None:
                self._producer.cancel()
                self._producer = None

    def close(self) -> None:
        """End every stream (the daemon is stopping); later followers end at once."""
        self._closed = True
        if self._producer is not None:
            self._producer.cancel()
        self._wake()

    async def _produce(self) -> None:
        while not self._closed:
            try:
                text = json.dumps(await self._snapshot())
            except Exception:
                log.exception("the status page's snapshot failed")
            else:
                if text != self._latest:
                    self._latest = text
                    self._version += 1
                    self._wake()
            await asyncio.sleep(self._busy_interval_s if self._busy() else self._interval_s)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def page_file(name: str) -> bytes:
    return (resources.files("stackd.api") / "page_assets" / name).read_bytes()


def status_snapshot(services: Services) -> Callable[[], Awaitable[PageSnapshot]]:
    """The page's snapshot: ``/status``'s body (``daemon_status``: the schedule and the leases
    too) with the stacks, switches, calls and log lines."""

    async def snapshot() -> PageSnapshot:
        manager = services.manager
        status = await daemon_status(services)  # what /status says, with what others add to it
        config, active = services.config, manager.active_stack
        tails = {  # enough lines that a few remain once the health probes are dropped
            name: manager.processes.log_tail(name, LOG_LINES_READ)
            for name in (m["name"] for m in status.get("members", ()) if m.get("runtime") == "process")
        }
        router = services.router
        return page_snapshot(
            status,
            [stack_json(config, name, active) for name in config.stacks],
            manager.recent_switches(SWITCHES_SHOWN),
            router.recent.newest(CALLS_SHOWN) if router is not None else [],
            tails,
            time.time(),
        )

    return snapshot


def build_page_router(services: Services, read: Callable[..., None]) -> tuple[APIRouter, StatusFeed]:
    """``GET /``, ``/page/app.js``, ``/page/style.css`` (no token) and ``GET /status/events``
    (``read``); the feed is returned so that the daemon can close it at shutdown."""
    router = APIRouter()
    files = {name: page_file(name) for name in FILES}
    feed = StatusFeed(status_snapshot(services), busy=lambda: services.manager.current_switch is not None)

    def serve(name: str) -> Callable[[], Awaitable[Response]]:
        async def endpoint() -> Response:
            return Response(files[name], media_type=FILES[name], headers=SECURITY_HEADERS)

        return endpoint

    router.add_api_route("/", serve("index.html"), methods=["GET"], include_in_schema=False)
    for name in ("app.js", "style.css"):
        router.add_api_route(f"/page/{name}", serve(name), methods=["GET"], include_in_schema=False)

    # Not in the OpenAPI document: the stream never ends, and a schema fuzzer would wait on it.
    @router.get("/status/events", dependencies=[Depends(read)], include_in_schema=False)
    async def status_events() -> StreamingResponse:
        async def sse() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(feed.follow()) as events:
                async for text in events:
                    yield b": keepalive\n\n" if text is None else f"event: status\ndata: {text}\n\n".encode()

        return StreamingResponse(
            sse(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router, feed
