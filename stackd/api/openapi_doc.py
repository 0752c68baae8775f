"""The daemon's OpenAPI document, complete, and the routes that serve it behind the token.

FastAPI documents only its own path operations. This generator adds what it cannot see:

- the raw ASGI routes (``/v1/chat/completions``, ``/v1/models``, ``/tools/reason`` …) with their
  request bodies (the same pydantic models that validate them) and answers
  (``stackd.api.answer_models``), JSON and server-sent events;
- every error an operation can answer, in the shape it has: stackd's ``Error`` on the control
  API and the tools, OpenAI's on the gateway. FastAPI's own ``HTTPValidationError`` is replaced
  by stackd's 422 (``InvalidRequest`` with ``problems``);
- a 401 on exactly the operations that need the token here (writes always, reads too on a
  non-loopback bind): FastAPI marks them with the ``bearer`` scheme of ``bearer_guard``.

``/openapi.json``, ``/docs`` and ``/redoc`` are routes of their own with the read guard, in place
of FastAPI's (which need no token): on a public bind they need the token like every endpoint
but ``/healthz``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "The daemon's token (STACKD_TOKEN or STATE_DIR/token).",
}
ERROR_TEXT = {
    401: "No token, or a wrong one: send `Authorization: Bearer TOKEN`.",
    404: "An unknown name or id; the message lists the valid ones.",
    409: "A switch is in the way, or (`POST /leases`) the model cannot be leased in the active stack "
    "(`LeaseRefused` with its `code`); the message says which.",
    413: "The request body is over the daemon's limit.",
    422: "The request is invalid; `problems` names each field.",
    502: "The backend answered with an error.",
    503: "Every strategy failed, an engine (Docker) cannot be reached, or a lease was not served by its "
    "`wait_s` (`Retry-After` says when to retry); the message says why.",
    504: "The call's `timeout_s` ran out.",
}
# The errors of each operation besides 401 (secured ones), 413 (all) and 422 (parameters, bodies).
ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/model-stacks/{name}"): (404,),
    ("post", "/model-stacks/switch"): (404, 409),
    ("get", "/model-stacks/switch/{switch_id}"): (404,),
    ("get", "/model-stacks/switch/{switch_id}/events"): (404,),
    ("get", "/roles/{role}"): (404,),
    ("post", "/leases"): (404, 409, 503),
    ("post", "/leases/{lease_id}/renew"): (404,),
    ("delete", "/leases/{lease_id}"): (404,),
    ("post", "/config/reload"): (409, 422),
    ("get", "/members/{name}/logs"): (404, 503),
    ("post", "/members/{name}/restart"): (404, 409),
    ("post", "/members/{name}/stop"): (404, 409),
    ("post", "/keys"): (409,),
    ("delete", "/keys/{name}"): (404,),
    ("post", "/keys/{name}/rotate"): (404,),
}
ACCEPTED = {("post", "/model-stacks/switch"): "With `wait: false`: the switch runs; follow it by its id."}


@dataclass(frozen=True)
class RawOperation:
    """A raw ASGI route as the document shows it."""

    method: str
    path: str
    summary: str
    body: type[BaseModel] | None
    answer: type[BaseModel]
    error: type[BaseModel]
    errors: tuple[int, ...]
    stream: str = ""  # what its server-sent events say; "" when it answers JSON only
    events: tuple[type[BaseModel], ...] = ()
    body_rule: dict[str, object] | None = None  # what the model's own validator adds to its schema


# invoke_model's validator wants exactly one of 'prompt' and 'messages', each not null.
ONE_OF_PROMPT_OR_MESSAGES: dict[str, object] = {
    "oneOf": [
        {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
        {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
    ]
}
TOOL_ERRORS = (404, 413, 422, 502, 503, 504)


def raw_operations() -> tuple[RawOperation, ...]:
    """The raw ASGI routes as the document shows them. Their answers' models only describe, and
    the document is made at its first request: they are imported here, not at the daemon's start."""
    from stackd.api.answer_models import (
        CHAT_EVENTS,
        CHAT_STREAM,
        TOOL_EVENTS,
        TOOL_STREAM,
        ChatCompletion,
        ErrorAnswer,
        ModelList,
        OpenAIError,
        ToolAnswer,
    )
    from stackd.api.gateway import ChatCompletionBody
    from stackd.api.tool_args import DeepReasoningArgs, InvokeModelArgs, ReasonArgs

    return (
        RawOperation("get", "/v1/models", "List the gateway's models", None, ModelList, OpenAIError, ()),
        RawOperation(
            "post",
            "/v1/chat/completions",
            "OpenAI chat completion through the active stack",
            ChatCompletionBody,
            ChatCompletion,
            OpenAIError,
            (404, 413, 422, 502, 503),
            CHAT_STREAM,
            CHAT_EVENTS,
        ),
        RawOperation(
            "post",
            "/tools/reason",
            "Reason about a problem with the effort's chain",
            ReasonArgs,
            ToolAnswer,
            ErrorAnswer,
            TOOL_ERRORS,
            TOOL_STREAM,
            TOOL_EVENTS,
        ),
        RawOperation(
            "post",
            "/tools/invoke_model",
            "Call a model preset directly",
            InvokeModelArgs,
            ToolAnswer,
            ErrorAnswer,
            TOOL_ERRORS,
            TOOL_STREAM,
            TOOL_EVENTS,
            ONE_OF_PROMPT_OR_MESSAGES,
        ),
        RawOperation(
            "post",
            "/tools/deep_reasoning",
            "Reason with the strongest strategy first",
            DeepReasoningArgs,
            ToolAnswer,
            ErrorAnswer,
            TOOL_ERRORS,
            TOOL_STREAM,
            TOOL_EVENTS,
        ),
    )


def component_schemas(models: Iterable[tuple[type[BaseModel], str]]) -> dict[str, object]:
    """JSON Schemas of ``models`` (each with its mode, "validation" or "serialization") as
    OpenAPI components, keyed by model name."""
    _, top = models_json_schema(list(models), ref_template=REF)  # type: ignore[arg-type]
    return dict(top.get("$defs", {}))


def error_response(code: int, model: type[BaseModel]) -> dict[str, object]:
    return {
        "description": ERROR_TEXT[code],
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }


def openapi_document(app: FastAPI, raw: Iterable[RawOperation]) -> dict[str, Any]:
    """The whole document: FastAPI's, completed, and the ``raw`` operations.

    An operation FastAPI marks with the ``bearer`` scheme (its guard is ``bearer_guard``) gets
    its 401; on a loopback bind the reads have no guard, hence no 401."""
    from stackd.api.answer_models import ErrorAnswer, OpenAIError

    raw = tuple(raw)
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    models: list[tuple[type[BaseModel], str]] = [
        (ErrorAnswer, "serialization"),
        (OpenAIError, "serialization"),
    ]
    models += [(model, "serialization") for op in raw for model in (op.answer, *op.events)]
    models += [(op.body, "validation") for op in raw if op.body is not None]
    schemas.update(component_schemas(models))
    doc["components"].setdefault("securitySchemes", {}).setdefault("bearer", BEARER)
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            has_input = bool(operation.get("parameters") or operation.get("requestBody"))
            codes = (*ERRORS.get((method, path), ()), 413, *((422,) if has_input else ()))
            responses = operation.setdefault("responses", {})
            _document(operation, responses, "security" in operation, codes, ErrorAnswer)
            if (method, path) in ACCEPTED:
                operation["responses"].setdefault(  # the route's own model, when it declares one
                    "202",
                    {
                        "description": ACCEPTED[(method, path)],
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                )
    for op in raw:
        doc["paths"].setdefault(op.path, {})[op.method] = raw_operation(op)
    return doc


def raw_operation(op: RawOperation) -> dict[str, object]:
    """The operation of a raw ASGI route, which FastAPI does not see: always behind the token."""
    from stackd.api.answer_models import sse_content

    content: dict[str, object] = {
        "application/json": {"schema": {"$ref": REF.format(model=op.answer.__name__)}},
        **(sse_content(op.stream, op.events) if op.stream else {}),
    }
    responses: dict[str, object] = {"200": {"description": "The answer.", "content": content}}
    operation: dict[str, object] = {
        "summary": op.summary,
        "operationId": op.path.strip("/").replace("/", "_") + f"_{op.method}",
        "responses": responses,
    }
    if op.body is not None:
        body: dict[str, object] = {"$ref": REF.format(model=op.body.__name__)}
        if op.body_rule is not None:
            body = {"allOf": [body], **op.body_rule}
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    _document(operation, responses, True, op.errors, op.error)
    return operation


def _document(
    operation: dict[str, object],
    responses: dict[str, object],
    needs_token: bool,
    codes: Iterable[int],
    error: type[BaseModel],
) -> None:
    """Add ``operation``'s error answers to its ``responses`` (and its 401 when it needs the token)."""
    if needs_token:
        operation["security"] = [{"bearer": []}]
        responses["401"] = error_response(401, error)
    for code in codes:
        responses[str(code)] = error_response(code, error)


def install_openapi(app: FastAPI, read: Callable[..., None], data_paths: bool) -> None:
    """Serve the document at ``/openapi.json``, and its two viewers, behind ``read``, in place of
    FastAPI's own routes for them (which answer without a token). ``data_paths``: the app has
    the gateway and the tools (a daemon with a router)."""
    unguarded = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in unguarded]

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, raw_operations() if data_paths else ())
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    guarded = [Depends(read)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(document())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @app.get("/redoc", include_in_schema=False, dependencies=guarded)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API")
