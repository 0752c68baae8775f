"""The remote prober: does a cloud (or remote) API answer, and does it accept our key?

A probe lists models, which costs no tokens: OpenAI-compatible ``GET {endpoint}/models``
(Bearer), Anthropic ``GET {endpoint}/v1/models`` (``x-api-key`` + ``anthropic-version``), Gemini
``GET {endpoint}/models?pageSize=1`` (``x-goog-api-key``), Ollama ``GET {endpoint}/api/tags``.

The key is the value of the variable named by ``remote.api_key_env`` in the daemon's ``Secrets``
(``stackd.config.secrets``: the environment, read at call time; a dict in tests) and travels only
in a header: never in a URL, an error or a log line. Messages copied from a remote's
error body are scrubbed of the key before they reach an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from stackd.config.models import Api, Model
from stackd.config.secrets import Secrets
from stackd.errors import DriverUnavailable, ProbeTimedOut

if TYPE_CHECKING:  # aiohttp (~0.1 s) is imported by the first probe, not at the daemon's start
    import aiohttp

ANTHROPIC_VERSION = "2023-06-01"  # the API version both the prober and the router's backend send
_MAX_MESSAGE = 200


def _join(endpoint: str, versions: tuple[str, ...], default_version: str, path: str) -> str:
    """``endpoint`` + ``path``, adding ``default_version`` when the endpoint names no version."""
    base = endpoint.rstrip("/")
    if not base.endswith(versions):
        base += default_version
    return base + path


def probe_request(model: Model, key: str | None) -> tuple[str, dict[str, str]]:
    """(URL, headers) of the probe for ``model``'s API flavour."""
    endpoint = model.endpoint or ""
    headers: dict[str, str] = {}
    match model.api:
        case Api.anthropic:
            url = _join(endpoint, ("/v1",), "/v1", "/models")
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if key:
                headers["x-api-key"] = key
        case Api.gemini:
            url = _join(endpoint, ("/v1beta", "/v1"), "/v1beta", "/models?pageSize=1")
            if key:
                headers["x-goog-api-key"] = key
        case Api.ollama:
            url = endpoint.rstrip("/") + "/api/tags"
            if key:
                headers["Authorization"] = f"Bearer {key}"
        case Api.http:
            url = endpoint.rstrip("/") + (model.health.path if model.health else "/")
        case _:
            url = endpoint.rstrip("/") + "/models"
            if key:
                headers["Authorization"] = f"Bearer {key}"
    return url, headers


def _shown(url: str) -> str:
    """``url`` as messages show it: without its query and without userinfo (credentials)."""
    base = url.split("?", 1)[0]
    scheme, sep, rest = base.partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{path}" if sep else base


def _is_auth_failure(api: Api, status: int, body: object) -> bool:
    if status in (401, 403):
        return True
    # Gemini answers a wrong key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
    return api == Api.gemini and status == 400 and "API_KEY_INVALID" in json.dumps(body)


def _remote_message(body: object, key: str | None) -> str:
    """The error message of an OpenAI, Anthropic, Gemini or Ollama error body, key scrubbed."""
    message = ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message", ""))
        elif isinstance(error, str):
            message = error
    if key:
        message = message.replace(key, "<redacted>")
    return message[:_MAX_MESSAGE]


class HttpRemoteProber:
    """Satisfies ``stackd.drivers.base.RemoteProber`` over aiohttp.

    ``session_factory`` returns a new ``aiohttp.ClientSession`` that the prober closes after
    each probe. ``secrets`` is where key variables are looked up (the daemon's environment, read
    at call time, when None). Each probe is bounded: ``connect_timeout_s`` to connect, ``total_timeout_s``
    in all.
    """

    def __init__(
        self,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        *,
        secrets: Secrets | None = None,
        connect_timeout_s: float = 2.0,
        total_timeout_s: float = 5.0,
    ) -> None:
        self._session_factory = session_factory
        self._secrets = secrets or Secrets.environment()
        self._total_s, self._connect_s = total_timeout_s, connect_timeout_s

    def _key(self, name: str, model: Model) -> str | None:
        key = self._secrets.api_key(model)
        if key is None and model.remote is not None and model.remote.api_key_env is not None:
            raise DriverUnavailable(f"remote model {name!r} has no API key: set {model.remote.api_key_env}")
        return key

    async def probe(self, name: str, model: Model) -> None:
        """One model-list request; returns when the remote answers 2xx (or 429: it is up)."""
        key = self._key(name, model)
        url, headers = probe_request(model, key)
        shown = _shown(url)
        if shown != url.split("?", 1)[0] and "Authorization" in headers:
            # aiohttp sends a URL's user:password as Basic auth, which a Bearer key would replace
            raise DriverUnavailable(
                f"remote model {name!r}: the endpoint has credentials in its URL and a key in "
                "the Authorization header; keep one (drop the URL's user:password@, or api_key_env)"
            )
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self._total_s, connect=self._connect_s)
        try:
            async with (
                (self._session_factory or aiohttp.ClientSession)() as session,
                session.get(url, headers=headers, timeout=timeout, allow_redirects=False) as response,
            ):
                status = response.status
                body: object = None
                if status >= 400:
                    try:
                        body = json.loads(await response.read())
                    except ValueError:
                        body = None
        except TimeoutError as exc:
            raise ProbeTimedOut(
                f"remote model {name!r}: {shown} did not answer within {self._total_s:g} s"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise DriverUnavailable(
                f"remote model {name!r}: cannot connect to {shown} ({exc.os_error})"
            ) from exc
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a header aiohttp refuses
            raise DriverUnavailable(
                f"remote model {name!r}: request to {shown} failed ({type(exc).__name__})"
            ) from exc
        if status < 400 or status == 429:
            return
        if _is_auth_failure(model.api, status, body):
            env_name = model.remote.api_key_env if model.remote else None
            hint = f"; check the key in {env_name}" if env_name else "; this remote needs an API key"
            raise DriverUnavailable(
                f"remote model {name!r}: authentication failed at {shown} (HTTP {status}){hint}"
            )
        detail = _remote_message(body, key)
        raise DriverUnavailable(
            f"remote model {name!r}: {shown} answered HTTP {status}" + (f": {detail}" if detail else "")
        )
