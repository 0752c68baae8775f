"""The request id of the call being served: set by the front door, read by log records and by the
backends, which send it upstream as ``X-Request-ID``.

A context variable: each request runs in its own task (uvicorn's), so it is the call's alone, and
tasks the call starts inherit it. Setting it costs well under a microsecond; an id is 32 hex
digits (a UUID's form: 16 random per process, then a counter) unless the caller sent a usable one.

Upstream, only an id in a UUID's form is sent: llama.cpp's Python server (starlette-context's
request-id plugin) answers any other ``X-Request-ID`` with 400, so a caller's ``trace-42`` is kept
for the answer and the log lines but not passed on.
"""

from __future__ import annotations

import itertools
import os
import re
from contextvars import ContextVar

HEADER = "X-Request-ID"
HEADER_KEY = b"x-request-id"  # ASGI header names are lower case
SCOPE_KEY = "stackd.request_id"  # the id in the ASGI scope, for handlers run outside the call's task
MAX_LENGTH = 128
# What a caller's id may hold: nothing that could break a log line or a header
USABLE = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,%d}" % MAX_LENGTH)

UUID_FORM = re.compile(
    r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

REQUEST_ID: ContextVar[str | None] = ContextVar("stackd_request_id", default=None)


# A random half per process and a counter: unique across restarts, and a third of os.urandom's cost.
_PROCESS = os.urandom(8).hex()
_SERIAL = itertools.count()


def new_request_id() -> str:
    return f"{_PROCESS}{next(_SERIAL) & 0xFFFFFFFFFFFFFFFF:016x}"


def upstream_id() -> str | None:
    """The call's id as a backend may receive it: in a UUID's form, else None (not sent)."""
    request_id = REQUEST_ID.get()
    return request_id if request_id is not None and UUID_FORM.fullmatch(request_id) else None


def accepted(value: bytes | None) -> str:
    """The caller's ``X-Request-ID`` when it is a usable one (1-128 of ``A-Za-z0-9._:@/+=-``),
    else a new id: a newline or a megabyte of header never reaches a log line."""
    if value is not None and USABLE.fullmatch(value):
        return value.decode("ascii")
    return new_request_id()
