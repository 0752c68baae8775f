"""A simulator of Anthropic's Messages API.

Routes: ``POST /v1/messages`` (JSON, or SSE with ``event:``/``data:`` pairs message_start,
content_block_start, ping, content_block_delta (text_delta)…, content_block_stop,
message_delta (stop_reason, usage.output_tokens), message_stop) and ``GET /v1/models``.
The key travels in ``x-api-key``; ``anthropic-version`` is required as on the real API.
Errors are ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import json

from aiohttp import web

from stackd.sim.control import count_prompt_tokens, split_answer
from stackd.sim.openai import prompt_text
from stackd.sim.server import SimServer

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str) -> web.Response:
    error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
    return web.json_response({"type": "error", "error": error}, status=status)


def _event(name: str, data: dict[str, object]) -> bytes:
    return (
        b"event: " + name.encode() + b"\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    )


def _message_text(body: dict[str, object]) -> str:
    """The system prompt (a string at the top level in Messages) and the messages' text."""
    system = body.get("system")
    return " ".join(p for p in (system if isinstance(system, str) else "", prompt_text(body)) if p)


def _invalid_request(body: object) -> str | None:
    """Why a Messages body is refused with 400, as the real API words it; None when it is valid."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("messages"), list):
        return "messages: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    return None


def _stream_events(message_id: str, model: str, answer: str, tokens: int, input_tokens: int) -> list[bytes]:
    """The SSE events of one streamed answer, in the order the real API sends them."""
    start: dict[str, object] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    block = {"type": "text", "text": ""}
    events = [
        _event("message_start", {"type": "message_start", "message": start}),
        _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        _event("ping", {"type": "ping"}),
    ]
    for piece in split_answer(answer, tokens):
        delta = {"type": "text_delta", "text": piece}
        events.append(
            _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    end = {"stop_reason": "end_turn", "stop_sequence": None}
    events += [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event("message_delta", {"type": "message_delta", "delta": end, "usage": {"output_tokens": tokens}}),
        _event("message_stop", {"type": "message_stop"}),
    ]
    return events


class AnthropicSim(SimServer):
    """Anthropic Messages API. ``models`` are listed by ``/v1/models``; any model name is served."""

    kind = "anthropic"
    stream_garbage = b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":\n\n'
    sse_error_event = b"error"

    default_models = ("claude-sim-1",)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/messages", self._messages)
        router.add_get("/v1/models", self._list_models)

    def error(self, status: int, message: str) -> web.Response:
        return anthropic_error(status, message)

    def presented_key(self, request: web.Request) -> str | None:
        return request.headers.get("x-api-key")

    def auth_failure(self, request: web.Request) -> web.Response:
        return anthropic_error(401, "invalid x-api-key")

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        if "anthropic-version" not in request.headers:
            return anthropic_error(400, "anthropic-version: header is required")
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"}
            for m in self.models
        ]
        body = {
            "data": data,
            "has_more": False,
            "first_id": self.models[0] if self.models else None,
            "last_id": self.models[-1] if self.models else None,
        }
        return await self.send_body(request, json.dumps(body).encode())

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if "anthropic-version" not in request.headers:
            return anthropic_error(400, "anthropic-version: header is required")
        body = self.body_of(request)
        refusal = _invalid_request(body)
        if refusal is not None:
            return anthropic_error(400, refusal)
        assert isinstance(body, dict)
        message_id = f"msg_sim{self.next_serial():08d}"
        model = body["model"]
        control = self.control
        tokens = max(1, control.tokens)
        input_tokens = count_prompt_tokens(_message_text(body))
        if not body.get("stream"):
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": control.answer}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": tokens},
            }
            return await self.send_body(request, json.dumps(message).encode())
        stream = await self.open_stream(request, "text/event-stream")
        for event in _stream_events(message_id, model, control.answer, tokens, input_tokens):
            await stream.send(event)
        return stream.response
