"""A route class whose body is JSON whatever ``Content-Type`` came with it.

``curl -d '{"stack": "x"}'`` sends ``application/x-www-form-urlencoded``, and FastAPI then hands
the raw bytes to the body model ("Input should be a valid dictionary"). The control API has one
body format, so a route of this class tells FastAPI the body is JSON before it parses it: the
pydantic model still validates it (a bad field is the usual 422 naming the field), and the
OpenAPI schema is the one FastAPI derives from the model, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

JSON = b"application/json"


def is_json(content_type: bytes) -> bool:
    """``application/json`` or ``application/*+json``, parameters (``; charset=…``) ignored."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == JSON or (media.startswith(b"application/") and media.endswith(b"+json"))


class JsonBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_as_json(request: Request) -> Response:
            given = request.headers.get("content-type", "").encode("latin-1")
            if not is_json(given):
                scope = request.scope  # the same scope: what the handler stores in it stays visible
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope["headers"].append((b"content-type", JSON))
                request = Request(scope, request.receive)
            return await handle(request)

        return handle_as_json
