"""One place that maps stackd's error tree and request validation to HTTP answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from stackd.errors import StackdError


def problem(err: Any) -> dict[str, str]:
    """One validation error as ``{field, message}``: the field's dotted path, or ``body``."""
    if err.get("type") == "json_invalid":  # its loc is ("body", character offset), not a field
        why = (err.get("ctx") or {}).get("error") or err["msg"]
        return {"field": "body", "message": f"not JSON ({why} at character {err['loc'][-1]})"}
    return {"field": ".".join(str(p) for p in err["loc"] if p != "body") or "body", "message": err["msg"]}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StackdError)
    async def stackd_error(request: Request, exc: StackdError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [problem(err) for err in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse(
            {"error": "InvalidRequest", "message": f"invalid request: {summary}", "problems": problems},
            status_code=422,
        )
