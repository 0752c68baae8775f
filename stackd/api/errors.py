"""The error table: the one place that turns an error into an HTTP answer.

Every answer of 400 or more that stackd gives is made here, for the FastAPI handlers and the
raw hot paths alike (``gateway.RawEndpoint``, the tools, the front door's refusals in
``dispatch``, the MCP endpoint, the server's own over-capacity answer):

- a ``StackdError`` carries its kind's status (its class's ``status``, declared beside its
  raiser); ``ERROR_TABLE`` says what that status means to a client: OpenAI's ``type`` and
  default ``code``, whether it names its auth scheme (``WWW-Authenticate: Bearer`` on a 401)
  and whether the error's ``retry_after_s`` becomes ``Retry-After`` (429 and 503, where
  RFC 9110 defines it);
- ``error_answer(exc, shape)`` renders one: stackd's shape (``{"error": NAME, "message",
  ...detail}``) or OpenAI's (``{"error": {"message", "type", "param", "code"}}``, under ``/v1``
  where its clients read it); anything that is not a ``StackdError`` is a bug, answered 500
  without its text (it may hold anything, a URL with credentials).

A syntax-tree test (tests/unit/test_import_rules.py) fails if a status of 400 or more, or a
``Retry-After`` or ``WWW-Authenticate`` header, is set anywhere else in stackd.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

from stackd.errors import StackdError

NO_BODY = {204, 304}
Shape = Literal["stackd", "openai"]
INTERNAL_ERROR = "internal error; the daemon's log has the details"


@dataclass(frozen=True)
class ErrorKind:
    """What one status means to a client: OpenAI's ``type`` and default ``code`` (an error's own
    ``code`` detail wins), the auth challenge of a 401, and ``Retry-After`` from ``retry_after_s``."""

    openai_type: str
    openai_code: str | None = None
    challenge: bool = False
    retry_after: bool = False


ERROR_TABLE: dict[int, ErrorKind] = {
    400: ErrorKind("invalid_request_error"),
    401: ErrorKind("authentication_error", "invalid_api_key", challenge=True),
    403: ErrorKind("permission_error", "insufficient_scope"),
    404: ErrorKind("invalid_request_error", "model_not_found"),
    413: ErrorKind("invalid_request_error", "request_too_large"),
    422: ErrorKind("invalid_request_error"),
    429: ErrorKind("rate_limit_error", "rate_limit_exceeded", retry_after=True),
    503: ErrorKind("server_error", "all_strategies_failed", retry_after=True),
}
SERVER_ERROR = ErrorKind("server_error")  # every other status (409, 500, 502, 504)


@dataclass(frozen=True)
class ErrorAnswer:
    """One error answer: its status, its JSON body and its headers beyond ``content-type``."""

    status: int
    body: dict[str, object]
    headers: tuple[tuple[str, str], ...] = ()

    def json(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as ASGI sends them (lower-case names), ``content-type`` first."""
        head = [(b"content-type", b"application/json")]
        return head + [(name.lower().encode(), value.encode()) for name, value in self.headers]

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=dict(self.headers) or None)


def shape_of(path: str) -> Shape:
    """OpenAI's shape under ``/v1/``, where the official clients read it; stackd's elsewhere."""
    return "openai" if path.startswith("/v1/") else "stackd"


def retry_after_header(value: object) -> str | None:
    """``Retry-After``'s whole seconds for ``retry_after_s`` (at least 1), or None when it is none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return str(max(math.ceil(value), 1))


def error_answer(exc: BaseException, shape: Shape = "stackd") -> ErrorAnswer:
    """``exc`` as an HTTP answer in ``shape`` (see the module's docstring)."""
    if not isinstance(exc, StackdError):
        if shape == "openai":
            bug = {"message": INTERNAL_ERROR, "type": "server_error", "param": None, "code": "internal_error"}
            return ErrorAnswer(500, {"error": bug})
        return ErrorAnswer(500, {"error": "InternalError", "message": INTERNAL_ERROR})
    kind = ERROR_TABLE.get(exc.status, SERVER_ERROR)
    headers: list[tuple[str, str]] = []
    if kind.challenge:
        headers.append(("WWW-Authenticate", "Bearer"))
    retry = retry_after_header(exc.detail.get("retry_after_s")) if kind.retry_after else None
    if retry is not None:
        headers.append(("Retry-After", retry))
    if shape == "stackd":
        return ErrorAnswer(exc.status, exc.to_dict(), tuple(headers))
    error: dict[str, object] = {
        "message": exc.message,
        "type": kind.openai_type,
        "param": None,
        "code": exc.detail.get("code") or kind.openai_code,
    }
    if "attempts" in exc.detail:
        error["attempts"] = exc.detail["attempts"]
    return ErrorAnswer(exc.status, {"error": error}, tuple(headers))


def raw_http_answer(exc: StackdError) -> bytes:
    """``exc`` as a whole HTTP/1.1 answer in plain text, for a connection the server answers
    before any ASGI app sees it (``http_server``: past its connection cap); it closes."""
    answer = error_answer(exc)
    text = exc.message.encode()
    reason = HTTPStatus(answer.status).phrase.encode()
    head = [b"HTTP/1.1 %d %s" % (answer.status, reason), b"content-type: text/plain; charset=utf-8"]
    head += [b"%s: %s" % (name, value) for name, value in answer.raw_headers()[1:]]
    head += [b"connection: close", b"content-length: %d" % len(text)]
    return b"\r\n".join(head) + b"\r\n\r\n" + text


def problem(err: ErrorDetails) -> dict[str, str]:
    """One validation error (of FastAPI or of ``model_validate_json``) as ``{field, message}``: the
    field's dotted path, or ``body``. The control API, the gateway and the tools all answer so."""
    if err.get("type") == "json_invalid" and err["loc"]:  # FastAPI's loc: ("body", character offset)
        why = (err.get("ctx") or {}).get("error") or err["msg"]
        return {"field": "body", "message": f"not JSON ({why} at character {err['loc'][-1]})"}
    return {"field": ".".join(str(p) for p in err["loc"] if p != "body") or "body", "message": err["msg"]}


def invalid_request_message(problems: list[dict[str, str]]) -> str:
    return "invalid request: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems)


def invalid_request_body(problems: list[dict[str, str]]) -> dict[str, object]:
    return {"error": "InvalidRequest", "message": invalid_request_message(problems), "problems": problems}


def documented_methods(document: dict[str, Any], path: str) -> list[str]:
    """The methods the OpenAPI ``document`` lists for ``path``: those of the path itself when it is
    one (``/model-stacks/switch``), else of the templates it matches (``/model-stacks/{name}``)."""
    paths = document.get("paths", {})
    if path in paths:
        return sorted(method.upper() for method in paths[path])
    methods: set[str] = set()
    for template, item in paths.items():
        parts = re.split(r"(\{[^}]+\})", template)
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in item)
    return sorted(methods)


def http_error_text(exc: StarletteHTTPException, method: str, path: str) -> tuple[str, str]:
    """(kind, message) of one of Starlette's HTTP errors."""
    if exc.status_code == 404:
        return "NotFound", f"no endpoint {path}; the endpoints are listed in /openapi.json"
    if exc.status_code == 405:
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}  # Starlette sends "Allow"
        allowed = headers.get("allow", "")
        return "MethodNotAllowed", f"{method} is not allowed on {path}; allowed: {allowed}"
    return "HTTPError", str(exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StackdError)
    async def stackd_error(request: Request, exc: StackdError) -> JSONResponse:
        return error_answer(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Starlette's own answers (no such path, a method the path does not take) get stackd's
        # shape, or OpenAI's under /v1 where the official clients read it; never ``{"detail"}``.
        if exc.status_code in NO_BODY:
            return Response(status_code=exc.status_code, headers=exc.headers)
        if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8): as any non-JSON body
            problems = [{"field": "body", "message": f"not JSON ({exc.detail})"}]
            return JSONResponse(invalid_request_body(problems), status_code=422)
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path; the document has them all.
            allowed = documented_methods(request.app.openapi(), request.url.path)
            if allowed:
                others = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
                exc.headers = {**others, "Allow": ", ".join(allowed)}
        kind, message = http_error_text(exc, request.method, request.url.path)
        body: dict[str, object] = {"error": kind, "message": message}
        if request.url.path.startswith("/v1/"):
            body = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": kind}
            }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug: Starlette logs the traceback after this answer, which does not repeat its text.
        return error_answer(exc).response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(invalid_request_body([problem(err) for err in exc.errors()]), status_code=422)
