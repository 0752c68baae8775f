"""The request id of the call being served: set by the front door, read by log records and by the
backends, which send it upstream as ``X-Request-ID``.

A context variable: each request runs in its own task (uvicorn's), so it is the call's alone, and
tasks the call starts inherit it. Setting it costs well under a microsecond; an id is 16 hex
digits from ``os.urandom`` unless the caller sent a usable one.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

HEADER = "X-Request-ID"
HEADER_KEY = b"x-request-id"  # ASGI header names are lower case
SCOPE_KEY = "stackd.request_id"  # the id in the ASGI scope, for handlers run outside the call's task
MAX_LENGTH = 128
# What a caller's id may hold: nothing that could break a log line or a header
USABLE = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,%d}" % MAX_LENGTH)

REQUEST_ID: ContextVar[str | None] = ContextVar("stackd_request_id", default=None)


def new_request_id() -> str:
    return os.urandom(8).hex()


def accepted(value: bytes | None) -> str:
    """The caller's ``X-Request-ID`` when it is a usable one (1-128 of ``A-Za-z0-9._:@/+=-``),
    else a new id: a newline or a megabyte of header never reaches a log line."""
    if value is not None and USABLE.fullmatch(value):
        return value.decode("ascii")
    return new_request_id()
