"""The Ollama driver: list, pull, load and unload through the official ``ollama`` AsyncClient.

Every call for a model carries the same ``options`` and ``keep_alive`` from its
``OllamaRuntime``. Ollama reloads a loaded model whenever a request's runner options differ from
the ones it was loaded with (``needsReload``), and the last request's keep_alive becomes its TTL,
so a call without them would silently reload the model or shorten its life.

Errors are translated here and nowhere else: unreachable or silent server → ``DriverUnavailable``
naming the URL and how to fix it; an answer that refuses the action (404, an ``{"error"}`` line
in a pull stream, a pull that stops before ``success``, an unreadable body) → ``DriverFailed``
with Ollama's own message.

The client (ollama, httpx: ~4-8 MiB of the daemon's memory, docs/benchmarks.md "Idle memory")
is made at the first call, once a plain TCP connection to the URL's port succeeds: a daemon whose
config names Ollama on a machine without it asks, is told "connection refused", and never loads
the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from stackd.config.models import OllamaRuntime
from stackd.drivers.base import LoadedModel, PullProgress
from stackd.errors import DriverFailed, DriverUnavailable, StackdError

if TYPE_CHECKING:
    import ollama

_FIX = "start `ollama serve` or set ollama.url / OLLAMA_HOST"


class OllamaHttpDriver:
    """Satisfies ``stackd.drivers.base.OllamaDriver`` against an Ollama server at ``url``.

    ``client`` is injected for tests; by default one is built with a 2 s connect timeout and a
    ``stall_timeout_s`` read timeout (the longest silence tolerated inside a pull stream).
    ``request_timeout_s`` bounds list/ps/unload, ``load_timeout_s`` bounds a load.
    """

    def __init__(
        self,
        url: str,
        client: ollama.AsyncClient | None = None,
        *,
        connect_timeout_s: float = 2.0,
        request_timeout_s: float = 15.0,
        load_timeout_s: float = 600.0,
        stall_timeout_s: float = 300.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = client
        self._connect_timeout_s = connect_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._request_timeout_s = request_timeout_s
        self._load_timeout_s = load_timeout_s

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]  # ollama leaves close() unannotated

    async def _connected(self) -> ollama.AsyncClient:
        """The client, made once a TCP connection to the server's port succeeds (raises
        ``DriverUnavailable`` like the client's own connection error otherwise)."""
        if self._client is None:
            await self._check_listening()
            import httpx
            import ollama

            timeout = httpx.Timeout(self._stall_timeout_s, connect=self._connect_timeout_s)
            self._client = ollama.AsyncClient(host=self.url, timeout=timeout)
        return self._client

    async def _check_listening(self) -> None:
        address = _host_port(self.url)
        if address is None:  # a form only the client reads, or a proxy between: the client decides
            return
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, writer = await asyncio.open_connection(*address)
        except TimeoutError:
            raise DriverUnavailable(
                f"Ollama at {self.url} did not accept a connection within {self._connect_timeout_s:g} s; {_FIX}"
            ) from None
        except OSError as exc:
            raise DriverUnavailable(
                f"Ollama not reachable at {self.url}: connection refused; {_FIX}"
            ) from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def list_tags(self) -> frozenset[str]:
        """Local tags; ``name:latest`` is also listed as ``name`` since configs may omit it."""
        with self._translated("list models"):
            async with asyncio.timeout(self._request_timeout_s):
                listing = await (await self._connected()).list()
        tags = {m.model for m in listing.models if m.model}
        return frozenset(tags | {t.removesuffix(":latest") for t in tags if t.endswith(":latest")})

    async def loaded(self) -> list[LoadedModel]:
        with self._translated("list loaded models"):
            async with asyncio.timeout(self._request_timeout_s):
                running = await (await self._connected()).ps()
        return [
            LoadedModel(
                tag=m.model or m.name or "",
                size=m.size or 0,
                size_vram=m.size_vram or 0,
                expires_at=_iso(m.expires_at),
            )
            for m in running.models
        ]

    async def pull(self, tag: str) -> AsyncIterator[PullProgress]:
        """Yield each progress line; raise ``DriverFailed`` unless the stream ends in ``success``."""
        succeeded = False
        with self._translated(f"pull {tag}"):
            async for part in await (await self._connected()).pull(tag, stream=True):
                status = part.status or ""
                succeeded = status == "success"
                yield PullProgress(
                    tag=tag, status=status, digest=part.digest, completed=part.completed, total=part.total
                )
        if not succeeded:
            raise DriverFailed(f"pull of {tag} from Ollama at {self.url} ended before success")

    async def load(self, runtime: OllamaRuntime) -> None:
        """Load with an empty prompt; returns when Ollama says the model is loaded.

        The call stays open until then on purpose: Ollama aborts a load whose request is cancelled.
        """
        with self._translated(f"load {runtime.tag}"):
            async with asyncio.timeout(self._load_timeout_s):
                await (await self._connected()).generate(
                    runtime.tag, prompt="", options=runtime.options, keep_alive=runtime.keep_alive
                )

    async def unload(self, runtime: OllamaRuntime) -> None:
        """``keep_alive: 0`` with an empty prompt; a model Ollama does not have is already unloaded."""
        try:
            with self._translated(f"unload {runtime.tag}"):
                async with asyncio.timeout(self._request_timeout_s):
                    await (await self._connected()).generate(
                        runtime.tag, prompt="", options=runtime.options, keep_alive=0
                    )
        except DriverFailed as exc:
            status = getattr(exc.__cause__, "status_code", None)  # ollama.ResponseError's
            if status == 404:
                return
            raise

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except StackdError:
            raise
        except Exception as exc:
            translated = self._translation(exc, action)
            if translated is None:
                raise
            raise translated from exc

    def _translation(self, exc: Exception, action: str) -> StackdError | None:
        """What a failed call means, or None when it is none of the client's errors."""
        unreachable = DriverUnavailable(f"Ollama not reachable at {self.url}: connection refused; {_FIX}")
        silent = DriverUnavailable(
            f"Ollama at {self.url} did not answer in time to {action}; check that it is not stuck"
        )
        if isinstance(exc, ConnectionError):
            return unreachable
        if isinstance(exc, TimeoutError):
            return silent
        import httpx  # loaded already: the client, which raised ``exc``, imported them
        import ollama

        if isinstance(exc, ollama.ResponseError):
            return DriverFailed(f"Ollama at {self.url} could not {action}: {exc.error}")
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return unreachable
        if isinstance(exc, httpx.TimeoutException):
            return silent
        if isinstance(exc, httpx.TransportError):
            return DriverUnavailable(
                f"connection to Ollama at {self.url} was lost while trying to {action}: {type(exc).__name__}"
            )
        if isinstance(exc, ValueError):  # invalid JSON or a body that does not match Ollama's schema
            return DriverFailed(f"Ollama at {self.url} sent an unreadable answer to {action}")
        return None


def _host_port(url: str) -> tuple[str, int] | None:
    """Where a TCP connection to ``url`` goes: an ``http(s)://HOST:PORT`` URL reached directly
    (no proxy variable set), else None."""
    parts = urlsplit(url)
    proxied = any(os.environ.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"))
    proxied = proxied or any(os.environ.get(name) for name in ("http_proxy", "https_proxy", "all_proxy"))
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or proxied:
        return None
    return parts.hostname, port


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()
