"""The CLI's HTTP client of the daemon (control path: httpx is fine here).

The token is looked for in this order, and the first one found is sent:

1. ``--token``, then ``STATE_DIR/token`` of ``--state-dir`` (a flag beats the environment);
2. ``$STACKD_TOKEN``, then ``STATE_DIR/token`` of ``$STACKD_STATE_DIR``;
3. ``STATE_DIR/token`` of the state dir the daemon names in ``GET /healthz`` (open, no token:
   the CLI and the daemon run as one user on one machine, so the CLI can read the file);
4. ``STATE_DIR/token`` of the default state dir.

When the daemon refuses it, the message names the daemon and where the token was read from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from stackd import DEFAULT_PORT, default_state_dir
from stackd.errors import StackdError

if TYPE_CHECKING:
    from stackd.cli.shapes import Health

# A query's parameters, as httpx encodes them.
Params = Mapping[str, str | int | float | bool]
Body = TypeVar("Body")

URL_ENV = "STACKD_URL"
TOKEN_ENV = "STACKD_TOKEN"
STATE_DIR_ENV = "STACKD_STATE_DIR"
TOKEN_FILE = "token"
FIX = "pass --token or --state-dir of that daemon"


class DaemonUnreachable(StackdError):
    status = 503


class DaemonError(StackdError):
    """The daemon answered with an error; ``message`` is its own sentence."""


class TokenRefused(DaemonError):
    """The daemon answered 401: the message says which daemon and which token."""

    status = 401


@dataclass(frozen=True)
class Token:
    """A bearer token (None: none found) and, for people, where it was read or looked for."""

    value: str | None
    source: str


NO_TOKEN = Token(None, "the client was given none")


def check_answer(body: Body, answer: type[BaseModel], what: str) -> Body:
    """``body`` itself when it has the shape of ``answer`` (the model its route documents,
    ``stackd.api.answers``); else ``DaemonError`` naming the route and the first field that
    differs: the daemon reached speaks another version of the API."""
    try:
        answer.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(the answer)"
        raise DaemonError(
            f"{what}: the daemon's answer does not have the shape this CLI knows ({field}: {first['msg']}); "
            "is the daemon another version of stackd?"
        ) from None
    return body


def default_url() -> str:
    """STACKD_URL, else the address ``stackd serve`` binds with the same environment."""
    host = os.environ.get("STACKD_HOST") or "127.0.0.1"
    return os.environ.get(URL_ENV) or f"http://{host}:{os.environ.get('STACKD_PORT') or DEFAULT_PORT}"


def find_token(
    token: str | None = None,
    state_dir: Path | None = None,
    daemon_state_dir: Callable[[], str | None] = lambda: None,
    env: Mapping[str, str] | None = None,
    default_dir: Path | None = None,
) -> Token:
    """The first token of the order in this module's docstring; a flag beats its environment
    variable. ``daemon_state_dir`` asks the daemon, only when nothing else names a token."""
    env = os.environ if env is None else env
    if token:
        return Token(token, "--token")
    if state_dir is not None:
        return _read(state_dir / TOKEN_FILE) or Token(None, f"{state_dir / TOKEN_FILE} is not readable")
    if env.get(TOKEN_ENV):
        return Token(env[TOKEN_ENV], f"${TOKEN_ENV}")
    if env.get(STATE_DIR_ENV):
        path = Path(env[STATE_DIR_ENV]) / TOKEN_FILE
        return _read(path) or Token(None, f"{path} (from ${STATE_DIR_ENV}) is not readable")
    reported = daemon_state_dir()
    candidates = [Path(reported)] if reported else []
    candidates.append(default_dir or default_state_dir())
    paths = list(dict.fromkeys(directory / TOKEN_FILE for directory in candidates))
    for path in paths:
        found = _read(path)
        if found is not None:
            return found
    files = " or ".join(map(str, paths))
    return Token(None, f"no --token, no --state-dir, no ${TOKEN_ENV}, no ${STATE_DIR_ENV}, no {files}")


def _read(path: Path) -> Token | None:
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return Token(value, str(path)) if value else None


class DaemonClient:
    """One daemon at ``url``. ``token``: a value, a ``Token``, or None for no Authorization."""

    def __init__(
        self,
        url: str | None = None,
        token: Token | str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or default_url()).rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._health: Health | None = None
        self.token = NO_TOKEN
        self.use_token(Token(token, "--token") if isinstance(token, str) else token)

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        token: str | None = None,
        state_dir: Path | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        env: Mapping[str, str] | None = None,
        default_dir: Path | None = None,
    ) -> DaemonClient:
        """A client of the daemon at ``url`` with the token ``find_token`` finds for it."""
        client = cls(url, timeout=timeout, transport=transport)

        def reported() -> str | None:  # asked only when nothing else names a token
            return client.health().get("state_dir")

        client.use_token(find_token(token, state_dir, reported, env, default_dir))
        return client

    def use_token(self, token: Token | None) -> None:
        self.token = token or NO_TOKEN
        self._http.headers.pop("Authorization", None)
        if self.token.value:
            self._http.headers["Authorization"] = f"Bearer {self.token.value}"

    def health(self) -> Health:
        """``GET /healthz`` once: which daemon this is (its URL, config, state dir, PID, version).
        Empty when it does not answer (the next request then says why)."""
        if self._health is None:
            self._health = self._read_health()
        return self._health

    def _read_health(self) -> Health:
        try:
            resp = self._http.get("/healthz", timeout=5.0)
            body: Health = resp.json() if resp.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}
        return body if isinstance(body, dict) else {}

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, params: Params | None = None, json: object = None
    ) -> Any:  # the decoded JSON: its shape is the route's (``get``/``post`` check it)
        try:
            resp = self._http.request(method, path, params=params, json=json)
        except httpx.ConnectError as exc:
            raise DaemonUnreachable(
                f"no stackd daemon at {self.url}; start it with 'stackd serve' or set {URL_ENV}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise DaemonUnreachable(f"stackd at {self.url} did not answer in time") from exc
        return self._decode(resp)

    def get(self, path: str, answer: type[BaseModel] | None = None, params: Params | None = None) -> Any:
        """The JSON of ``GET path``, checked against ``answer`` (the route's model) when given."""
        body = self.request("GET", path, params=params)
        return body if answer is None else check_answer(body, answer, f"GET {path}")

    def post(self, path: str, body: Mapping[str, object], answer: type[BaseModel] | None = None) -> Any:
        """The JSON of ``POST path``, checked against ``answer`` when given."""
        data = self.request("POST", path, json=body)
        return data if answer is None else check_answer(data, answer, f"POST {path}")

    def stream_events(self, path: str) -> Iterator[Any]:
        """Yield the JSON payload of each SSE event of ``GET path`` (its shape is the route's)."""
        return self._stream("GET", path, None)

    def stream_events_post(self, path: str, body: Mapping[str, object]) -> Iterator[Any]:
        return self._stream("POST", path, body)

    def _stream(self, method: str, path: str, body: Mapping[str, object] | None) -> Iterator[Any]:
        try:
            with self._http.stream(method, path, json=body, timeout=None) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._decode(resp)
                for line in resp.iter_lines():
                    payload = line[5:].strip() if line.startswith("data:") else ""
                    if payload and payload != "[DONE]":
                        yield json.loads(payload)
        except httpx.ConnectError as exc:
            raise DaemonUnreachable(f"no stackd daemon at {self.url}") from exc

    def _decode(self, resp: httpx.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = {"message": resp.text}
        if resp.status_code == 401:
            raise TokenRefused(self.refusal(), body=body)
        if resp.status_code >= 400:
            message = body.get("message") if isinstance(body, dict) else None
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                message = body["error"].get("message")
            raise DaemonError(message or f"HTTP {resp.status_code}", status=resp.status_code, body=body)
        return body

    def refusal(self) -> str:
        """Why the daemon answered 401, naming it and the token's origin."""
        if self.token.value is None:
            text = f"the daemon at {self.url} needs a token and none was found: {self.token.source}"
        else:
            text = f"the daemon at {self.url} refused the token read from {self.token.source}"
        source = self.health().get("token_source")
        if source and source != self.token.source:
            where = f"${source}" if source == TOKEN_ENV else source
            text += f" (it reads its own from {where})"
        return f"{text}; {FIX}"
