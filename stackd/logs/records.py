"""How the daemon's log lines look: ``configure`` installs one handler on the root logger.

Not a terminal (systemd's journal, a file, a container's log): one JSON object per line, the keys
``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``msg``, ``request_id`` when the
line belongs to a call, the record's ``extra`` fields, and ``exc`` for a traceback. A terminal:
``HH:MM:SS LEVEL logger [request id] message``.

Secrets: every value ``configure`` is given (the token, each configured API key) is replaced by
``[redacted]`` in the finished line, whatever put it there (a message, an argument, a traceback,
uvicorn's own lines). Prompts and completions are written only by ``stackd.content``
(``content``), a logger that is off unless ``Settings.log_content`` is set.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from stackd.logs import content
from stackd.logs.request_id import REQUEST_ID

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 8  # shorter values would mask ordinary words, and are no key anyway
# uvicorn colours its messages and puts the coloured copy in ``color_message``: a JSON line carries
# neither the copy nor any escape code.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DROPPED = frozenset({"color_message"})
# The attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class Masking:
    """Replaces each secret by ``[redacted]`` in a finished line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first: a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line


class JsonLines(logging.Formatter):
    """One JSON object per record (see the module's docstring)."""

    def __init__(self, mask: Masking) -> None:
        super().__init__()
        self._mask = mask

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": _ANSI.sub("", record.getMessage()),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "request_id" and key not in _DROPPED:
                line[key] = _ANSI.sub("", value) if isinstance(value, str) else value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return self._mask(json.dumps(line, default=str, ensure_ascii=False))


class HumanLines(logging.Formatter):
    """``HH:MM:SS LEVEL logger [request id] message`` for a person at a terminal."""

    def __init__(self, mask: Masking) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(rid)s%(message)s", "%H:%M:%S")
        self._mask = mask

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.rid = f"[{request_id}] " if request_id else ""
        return self._mask(super().format(record))


class WithRequestId(logging.Filter):
    """Stamps each record with the request id of the call that logged it (None outside a call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def configure(
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    level: int = logging.INFO,
    log_content: bool = False,
) -> logging.Handler:
    """Make the root logger write to ``stream`` (stderr): JSON lines unless it is a terminal.
    Replaces any handler set before (``logging.basicConfig``'s, a second ``configure``'s)."""
    stream = sys.stderr if stream is None else stream
    mask = Masking(secrets)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(HumanLines(mask) if _is_terminal(stream) else JsonLines(mask))
    handler.addFilter(WithRequestId())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Every readiness poll and job run at INFO would bury what stackd itself says.
    for chatty in ("httpx", "apscheduler", "mcp"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    content.enable(log_content)
    return handler


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
