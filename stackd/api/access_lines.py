"""The access line of a request: its ``X-Request-ID`` on the answer, its status, and one log
line (method, path, status, milliseconds, a failed answer's message) on ``stackd.access``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable

from starlette.types import Message, Scope, Send

from stackd.logs.request_id import HEADER_KEY as REQUEST_ID_KEY

access = logging.getLogger("stackd.access")
ERROR_BODY_BYTES = 4096  # of a failed answer's body, for its message in the log line


class RequestIdSend:
    """``send`` that adds ``X-Request-ID`` to the response head and remembers its status (and,
    of an answer of 500 or more, the start of its body: its message goes in the log line)."""

    __slots__ = ("_header", "_send", "error_body", "status")

    def __init__(self, send: Send, request_id: bytes) -> None:
        self._send = send
        self._header = (REQUEST_ID_KEY, request_id)
        self.status = 0
        self.error_body = b""

    def __call__(self, message: Message) -> Awaitable[None]:
        # Not a coroutine of its own: the inner send's awaitable is handed back (2 µs less a request).
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), self._header]}
        elif self.status >= 500 and not self.error_body:
            self.error_body = bytes(message.get("body", b""))[:ERROR_BODY_BYTES]
        return self._send(message)


def answer_message(body: bytes) -> str | None:
    """The message of a JSON error answer, stackd's (``{"message"}``) or OpenAI's
    (``{"error": {"message"}}``); None for anything else."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    error = value.get("error")
    message = error.get("message") if isinstance(error, dict) else value.get("message")
    return message[:500] if isinstance(message, str) else None


def access_line(scope: Scope, status: int, started: float, error: str | None = None) -> None:
    """One line for a request: method, path, status, milliseconds, and ``error``, the failed
    answer's message (WARNING from 500 on). The query string is left out: a caller may have put a
    credential in it."""
    ms = round((time.perf_counter() - started) * 1000, 2)
    fields: dict[str, object] = {"method": scope["method"], "path": scope["path"], "status": status}
    fields["duration_ms"] = ms
    if error is not None:
        fields["error"] = error
    access.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "%s %s %d %.2f ms%s",
        scope["method"],
        scope["path"],
        status,
        ms,
        f": {error}" if error else "",
        extra=fields,
    )
