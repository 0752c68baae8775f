"""HTTP health probes of members' endpoints (the ``HealthChecker`` contract of ``base``).

Which URL is probed:

- with a ``health`` section, ``GET`` of ``health.path`` resolved against the endpoint. A path that
  starts with ``/`` replaces the endpoint's path, so ``http://127.0.0.1:8120/v1`` with ``/health``
  probes ``http://127.0.0.1:8120/health`` (vLLM serves ``/health`` beside ``/v1``); a relative
  path is appended to the endpoint (``health`` → ``…/v1/health``). Healthy means a 2xx answer.
- without one, ``GET`` of the endpoint's origin (``scheme://host:port/``); healthy means any
  answer below 500, because a server that answers at all, even 404, is up.

Ollama models without an endpoint are probed at the Ollama URL given to the constructor.
Every probe is bounded by ``health.timeout_s`` (2 s without a section) and raises only
``DriverUnavailable``, with the URL and what went wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from stackd.config.models import DEFAULT_PROCESS_HEALTH_PATH, HealthCheck, Model
from stackd.errors import DriverUnavailable, ProbeTimedOut
from stackd.roles import LiveEndpoints

if TYPE_CHECKING:  # aiohttp (~0.1 s) is imported by the first probe, not at the daemon's start
    import aiohttp

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_TIMEOUT_S = HealthCheck.model_validate({}).timeout_s

SessionFactory = Callable[[], "aiohttp.ClientSession"]


def health_url(model: Model, ollama_url: str = DEFAULT_OLLAMA_URL, live_endpoint: str | None = None) -> str:
    """The URL a probe of ``model`` requests (see the module docstring for the rules).

    ``live_endpoint``: where a process member answers now (its port is picked at start)."""
    endpoint = live_endpoint or model.endpoint or ollama_url
    parts = urlsplit(endpoint)
    if model.health is None and model.process is not None:
        return urlunsplit((parts.scheme, parts.netloc, DEFAULT_PROCESS_HEALTH_PATH, "", ""))
    if model.health is None:
        return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
    path = model.health.path
    if path.startswith("/"):
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return f"{endpoint.rstrip('/')}/{path}"


class HttpHealthChecker:
    """Probes members over HTTP with aiohttp.

    ``session_factory`` makes the ``aiohttp.ClientSession`` of one probe; the checker closes it
    after the probe. A fresh session per probe means a fresh connection, so a probe never passes
    on a pooled connection to a server that has since died, and the checker owns nothing that
    needs closing.
    """

    def __init__(
        self,
        session_factory: SessionFactory | None = None,
        ollama_url: str = DEFAULT_OLLAMA_URL,
        endpoints: LiveEndpoints | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._ollama_url = ollama_url
        self._endpoints = endpoints or LiveEndpoints()

    async def check(self, name: str, model: Model) -> None:
        import aiohttp

        url = health_url(model, self._ollama_url, self._endpoints.get(name))
        timeout_s = model.health.timeout_s if model.health else DEFAULT_TIMEOUT_S
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with (
                (self._session_factory or aiohttp.ClientSession)() as session,
                session.get(url, timeout=timeout, allow_redirects=False) as resp,
            ):
                status = resp.status
        except TimeoutError as exc:
            raise ProbeTimedOut(
                f"health probe of '{name}' at {url} got no answer within {timeout_s:g} s", model=name, url=url
            ) from exc
        except aiohttp.ClientError as exc:
            raise DriverUnavailable(
                f"health probe of '{name}' at {url} failed: {_reason(exc)}", model=name, url=url
            ) from exc
        strict = model.health is not None or model.process is not None
        healthy = 200 <= status < 300 if strict else status < 500
        if not healthy:
            expected = "2xx" if strict else "an answer below 500"
            raise DriverUnavailable(
                f"health probe of '{name}' at {url} answered HTTP {status}, expected {expected}",
                model=name,
                url=url,
                status_code=status,
            )


def _reason(exc: aiohttp.ClientError) -> str:
    """A short cause: the OS error of a refused connection rather than aiohttp's long repr."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or str(exc.os_error)
    return str(exc) or type(exc).__name__
