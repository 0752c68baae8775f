"""One place that maps stackd's error tree and request validation to HTTP answers."""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from stackd.errors import StackdError

NO_BODY = {204, 304}


def problem(err: Any) -> dict[str, str]:
    """One validation error (of FastAPI or of ``model_validate_json``) as ``{field, message}``: the
    field's dotted path, or ``body``. The control API, the gateway and the tools all answer so."""
    if err.get("type") == "json_invalid" and err["loc"]:  # FastAPI's loc: ("body", character offset)
        why = (err.get("ctx") or {}).get("error") or err["msg"]
        return {"field": "body", "message": f"not JSON ({why} at character {err['loc'][-1]})"}
    return {"field": ".".join(str(p) for p in err["loc"] if p != "body") or "body", "message": err["msg"]}


def invalid_request_message(problems: list[dict[str, str]]) -> str:
    return "invalid request: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems)


def invalid_request_body(problems: list[dict[str, str]]) -> dict[str, Any]:
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
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        retry_after = exc.detail.get("retry_after_s")
        if exc.status == 503 and isinstance(retry_after, int | float):
            headers = {"Retry-After": str(max(math.ceil(retry_after), 1))}
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

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
        body: dict[str, Any] = {"error": kind, "message": message}
        if request.url.path.startswith("/v1/"):
            body = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": kind}
            }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug: Starlette logs the traceback after this answer. The text of the exception may
        # hold anything (a URL with credentials), so the answer does not repeat it.
        body = {"error": "InternalError", "message": "internal error; the daemon's log has the details"}
        return JSONResponse(body, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(invalid_request_body([problem(err) for err in exc.errors()]), status_code=422)
