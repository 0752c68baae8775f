"""The Ollama driver: list, pull, load and unload through the official ``ollama`` AsyncClient.

Every call for a model carries the same ``options`` and ``keep_alive`` from its
``OllamaRuntime``. Ollama reloads a loaded model whenever a request's runner options differ from
the ones it was loaded with (``needsReload``), and the last request's keep_alive becomes its TTL,
so a call without them would silently reload the model or shorten its life.

Errors are translated here and nowhere else: unreachable or silent server → ``DriverUnavailable``
naming the URL and how to fix it; an answer that refuses the action (404, an ``{"error"}`` line
in a pull stream, a pull that stops before ``success``, an unreadable body) → ``DriverFailed``
with Ollama's own message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import httpx
import ollama

from stackd.config.models import OllamaRuntime
from stackd.drivers.base import LoadedModel, PullProgress
from stackd.errors import DriverFailed, DriverUnavailable

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
        timeout = httpx.Timeout(stall_timeout_s, connect=connect_timeout_s)
        self._client = client if client is not None else ollama.AsyncClient(host=self.url, timeout=timeout)
        self._request_timeout_s = request_timeout_s
        self._load_timeout_s = load_timeout_s

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]  # ollama leaves close() unannotated

    async def list_tags(self) -> frozenset[str]:
        """Local tags; ``name:latest`` is also listed as ``name`` since configs may omit it."""
        with self._translated("list models"):
            async with asyncio.timeout(self._request_timeout_s):
                listing = await self._client.list()
        tags = {m.model for m in listing.models if m.model}
        return frozenset(tags | {t.removesuffix(":latest") for t in tags if t.endswith(":latest")})

    async def loaded(self) -> list[LoadedModel]:
        with self._translated("list loaded models"):
            async with asyncio.timeout(self._request_timeout_s):
                running = await self._client.ps()
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
            async for part in await self._client.pull(tag, stream=True):
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
                await self._client.generate(
                    runtime.tag, prompt="", options=runtime.options, keep_alive=runtime.keep_alive
                )

    async def unload(self, runtime: OllamaRuntime) -> None:
        """``keep_alive: 0`` with an empty prompt; a model Ollama does not have is already unloaded."""
        try:
            with self._translated(f"unload {runtime.tag}"):
                async with asyncio.timeout(self._request_timeout_s):
                    await self._client.generate(runtime.tag, prompt="", options=runtime.options, keep_alive=0)
        except DriverFailed as exc:
            if isinstance(exc.__cause__, ollama.ResponseError) and exc.__cause__.status_code == 404:
                return
            raise

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except ollama.ResponseError as exc:
            raise DriverFailed(f"Ollama at {self.url} could not {action}: {exc.error}") from exc
        except (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise DriverUnavailable(
                f"Ollama not reachable at {self.url}: connection refused; {_FIX}"
            ) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise DriverUnavailable(
                f"Ollama at {self.url} did not answer in time to {action}; check that it is not stuck"
            ) from exc
        except httpx.TransportError as exc:
            raise DriverUnavailable(
                f"connection to Ollama at {self.url} was lost while trying to {action}: {type(exc).__name__}"
            ) from exc
        except ValueError as exc:  # invalid JSON or a body that does not match Ollama's schema
            raise DriverFailed(f"Ollama at {self.url} sent an unreadable answer to {action}") from exc


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()
