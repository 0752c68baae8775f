"""Bearer-token auth for the daemon.

The token comes from ``STACKD_TOKEN`` or from ``STATE_DIR/token``, created with mode 0600 on
first start. Comparison is constant-time. The token is never logged or returned.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from stackd.errors import StackdError

TOKEN_ENV = "STACKD_TOKEN"
TOKEN_FILE = "token"
CALLER_KEY = "stackd.caller"  # the ASGI scope's entry for the caller the front door admitted


class Unauthorized(StackdError):
    status = 401


def load_or_create_token(state_dir: Path, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Return (token, where it came from). Creates STATE_DIR/token (0600) when neither exists."""
    env = dict(os.environ) if env is None else env
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV], TOKEN_ENV
    path = state_dir / TOKEN_FILE
    if path.exists():
        return path.read_text().strip(), str(path)
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL + 0600 at creation: the token is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, str(path)


# As a sub-dependency it only documents the scheme: FastAPI then lists ``security`` on every
# operation the guard protects. The guard reads the header itself, so it can also be called
# with a bare ``Request`` (the raw ASGI endpoints, the front door).
BEARER_SCHEME = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description=f"The daemon's token: ${TOKEN_ENV}, or the state dir's '{TOKEN_FILE}' file.",
)


def bearer_guard(token: str) -> Callable[[Request], None]:
    """A FastAPI dependency that accepts only ``Authorization: Bearer <token>``, compared in
    constant time (``hmac.compare_digest``: the time taken does not tell how much matched)."""
    expected = token.encode()

    def require_token(request: Request, _scheme: Annotated[Any, Depends(BEARER_SCHEME)] = None) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized(
                "missing or wrong bearer token; send 'Authorization: Bearer TOKEN' "
                f"(the token is in ${TOKEN_ENV} or the state dir's '{TOKEN_FILE}' file)"
            )

    return require_token


def open_guard(request: Request) -> None:
    """Read endpoints on a loopback bind need no token."""


def admitted_guard(request: Request, _scheme: Annotated[Any, Depends(BEARER_SCHEME)] = None) -> None:
    """The routes' own check behind the front door's gate (``stackd.api.gate``), which decides
    every request by the scope table: a request that did not pass the gate (an app served
    without its front door) is refused. As a dependency it marks the route with the bearer scheme."""
    admitted(request.scope)


def admitted(scope: MutableMapping[str, Any]) -> None:
    """``admitted_guard`` on the ASGI scope alone (the raw routes build no ``Request`` for it)."""
    if CALLER_KEY not in scope:
        raise Unauthorized("missing or wrong bearer token; send 'Authorization: Bearer TOKEN'")


def scope_guard(guard: Callable[..., object]) -> Callable[[MutableMapping[str, Any]], None] | None:
    """The scope-only form of one of the guards above, None for a guard that needs the request."""
    if guard is admitted_guard:
        return admitted
    if guard is open_guard:
        return lambda scope: None
    return None
