"""Anthropic Messages (``POST /v1/messages``), streaming through its typed SSE events.

System messages move to the top-level ``system`` field; ``max_tokens`` is mandatory in this
protocol (1024 when the caller sets none). Usage comes from ``usage.input_tokens`` and
``usage.output_tokens`` (``message_start`` and ``message_delta`` when streaming).

The Messages API has no ``response_format``, and stackd does not translate ``tools`` to its tool
use: a request that asks for either skips this backend with that reason (never unconstrained
text for a constrained request).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from stackd.config.models import Model
from stackd.drivers.remote import ANTHROPIC_VERSION
from stackd.router.backends.base import (
    Wire,
    decode_json,
    error_event,
    malformed,
    missing_key_reason,
    post,
    read_json,
    sse_data,
    text_of,
    token_count,
)
from stackd.router.backends.contract import format_kind, tools_wanted
from stackd.router.http_client import HttpClient
from stackd.router.redaction import Redactor
from stackd.router.types import (
    BackendError,
    ChatRequest,
    Completion,
    FailureKind,
    StreamEvent,
    StreamFinish,
    TextDelta,
    Usage,
)

DEFAULT_MAX_TOKENS = 1024
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def messages_url(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


class AnthropicBackend:
    def __init__(self, name: str, model: Model, client: HttpClient, redact: Redactor | None = None) -> None:
        self.name = name
        self.model = model
        self.request_model = model.request_model or name
        self._wire = Wire.to(messages_url(model.endpoint or ""), redact or Redactor())
        self._client = client

    def not_ready(self) -> str | None:
        return missing_key_reason(self.model, self._wire)

    def unsupported(self, request: ChatRequest) -> str | None:
        kind = format_kind(request)
        if kind is not None:
            return (
                f"Anthropic's Messages API has no response_format: it cannot constrain the answer to {kind}"
            )
        if tools_wanted(request):
            return "stackd does not translate tools to Anthropic's tool use"
        return None

    def _payload(self, request: ChatRequest, stream: bool) -> dict[str, object]:
        system = [text_of(m.get("content")) for m in request.messages if m.get("role") == "system"]
        messages = [
            {
                "role": "assistant" if m.get("role") == "assistant" else "user",
                "content": text_of(m.get("content")),
            }
            for m in request.messages
            if m.get("role") != "system"
        ]
        body: dict[str, object] = {
            "model": self.request_model,
            "messages": messages,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = request.stop
        if stream:
            body["stream"] = True
        return body

    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    async def complete(self, request: ChatRequest) -> Completion:
        headers = self._headers(self._wire.api_key(self.model))
        async with post(self._client, self._wire, self._payload(request, False), headers) as resp:
            data = await read_json(resp, self._wire, "message")
            try:
                text = "".join(str(b.get("text", "")) for b in data["content"] if b.get("type") == "text")
                usage = data.get("usage") or {}
                return Completion(
                    text,
                    FINISH.get(str(data.get("stop_reason") or "end_turn"), "stop"),
                    Usage(token_count(usage.get("input_tokens")), token_count(usage.get("output_tokens"))),
                )
            except (KeyError, TypeError, AttributeError):
                raise malformed(f"message without content blocks: {self._wire.shown(data)}") from None

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        finish = "stop"
        wire = self._wire
        headers = self._headers(self._wire.api_key(self.model))
        async with post(self._client, wire, self._payload(request, True), headers) as resp:
            async for data in sse_data(resp, wire):
                event = decode_json(data, "stream event", wire)
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "content_block_delta":
                    text = (event.get("delta") or {}).get("text")
                    if text:
                        if not isinstance(text, str):
                            raise malformed(f"stream event with a non-text delta: {wire.text(data)!r}")
                        yield TextDelta(text)
                elif kind == "message_start":
                    usage = (event.get("message") or {}).get("usage") or {}
                    prompt_tokens = token_count(usage.get("input_tokens"))
                elif kind == "message_delta":
                    stop = (event.get("delta") or {}).get("stop_reason") or "end_turn"
                    finish = FINISH.get(str(stop), "stop")
                    completion_tokens = token_count((event.get("usage") or {}).get("output_tokens"))
                elif kind == "message_stop":
                    yield StreamFinish(finish, Usage(prompt_tokens, completion_tokens))
                    return
                elif kind == "error":
                    raise error_event(wire, event.get("error"))
                elif kind is None:
                    raise malformed(f"stream event without a type: {wire.text(data)!r}")
        raise BackendError(FailureKind.stream_cut, f"{self.name} stream ended before message_stop")
