"""The CLI's HTTP client of the daemon (control path: httpx is fine here)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from stackd.errors import StackdError
from stackd.settings import DEFAULT_PORT, default_state_dir

URL_ENV = "STACKD_URL"


class DaemonUnreachable(StackdError):
    status = 503


class DaemonError(StackdError):
    """The daemon answered with an error; ``message`` is its own sentence."""


def default_url() -> str:
    return os.environ.get(URL_ENV, f"http://127.0.0.1:{DEFAULT_PORT}")


def find_token(state_dir: Path | None = None) -> str | None:
    if os.environ.get("STACKD_TOKEN"):
        return os.environ["STACKD_TOKEN"]
    state = state_dir or Path(os.environ.get("STACKD_STATE_DIR") or default_state_dir())
    path = state / "token"
    try:
        return path.read_text().strip()
    except OSError:
        return None


class DaemonClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or default_url()).rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise DaemonUnreachable(
                f"no stackd daemon at {self.url}; start it with 'stackd serve' or set {URL_ENV}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise DaemonUnreachable(f"stackd at {self.url} did not answer in time") from exc
        return self._decode(resp)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def stream_events(self, path: str) -> Iterator[dict[str, Any]]:
        """Yield the JSON payload of each SSE event of ``GET path``."""
        return self._stream("GET", path, None)

    def stream_events_post(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self._stream("POST", path, body)

    def _stream(self, method: str, path: str, body: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
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

    @staticmethod
    def _decode(resp: httpx.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = {"message": resp.text}
        if resp.status_code >= 400:
            message = body.get("message") if isinstance(body, dict) else None
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                message = body["error"].get("message")
            raise DaemonError(message or f"HTTP {resp.status_code}", status=resp.status_code, body=body)
        return body
