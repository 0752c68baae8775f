"""Google Gemini ``generateContent`` and ``streamGenerateContent?alt=sse``.

Roles map to ``user``/``model``; system messages become ``systemInstruction``. The key goes in
the ``x-goog-api-key`` header (never in the URL, where it would reach logs). Usage is
``usageMetadata.promptTokenCount`` / ``candidatesTokenCount`` (cumulative when streaming: the
last one counts). The stream has no end marker: it is complete when a chunk carried a
``finishReason``.

The answer's contract: ``json_object`` becomes ``responseMimeType: application/json``,
``json_schema`` adds the schema as ``responseJsonSchema`` (Gemini's field that takes JSON Schema
as it is; ``responseSchema`` wants its OpenAPI subset). ``tools`` are not translated to Gemini's
function declarations: a request that offers tools skips this backend, saying so.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from stackd.config.models import Model
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
from stackd.router.backends.contract import schema_of, tools_wanted
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

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter"}


def usage_of(data: Mapping[str, object]) -> Usage | None:
    meta = data.get("usageMetadata")
    if not isinstance(meta, dict):
        return None
    return Usage(token_count(meta.get("promptTokenCount")), token_count(meta.get("candidatesTokenCount")))


def candidate_text(data: dict[str, Any]) -> tuple[str, str | None]:
    """(text, finishReason) of the first candidate; raises KeyError/TypeError on a wrong shape."""
    candidate = data["candidates"][0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(str(p.get("text", "")) for p in parts if not p.get("thought"))
    finish = candidate.get("finishReason")
    return text, str(finish) if finish else None


class GeminiBackend:
    def __init__(self, name: str, model: Model, client: HttpClient, redact: Redactor | None = None) -> None:
        self.name = name
        self.model = model
        self.request_model = model.request_model or name
        base = f"{(model.endpoint or '').rstrip('/')}/models/{self.request_model}"
        self._wire = Wire.to(f"{base}:generateContent", redact or Redactor())
        self._stream_wire = Wire.to(f"{base}:streamGenerateContent?alt=sse", redact or Redactor())
        self._client = client

    def not_ready(self) -> str | None:
        return missing_key_reason(self.model, self._wire)

    def unsupported(self, request: ChatRequest) -> str | None:
        if tools_wanted(request):
            return "stackd does not translate tools to Gemini's function declarations"
        return None

    def _payload(self, request: ChatRequest) -> dict[str, object]:
        system = [text_of(m.get("content")) for m in request.messages if m.get("role") == "system"]
        contents = [
            {
                "role": "model" if m.get("role") == "assistant" else "user",
                "parts": [{"text": text_of(m.get("content"))}],
            }
            for m in request.messages
            if m.get("role") != "system"
        ]
        config: dict[str, object] = {}
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.top_p is not None:
            config["topP"] = request.top_p
        if request.stop:
            config["stopSequences"] = request.stop
        if (request.response_format or {}).get("type", "text") != "text":
            config["responseMimeType"] = "application/json"
            schema = schema_of(request.response_format)
            if schema is not None:
                config["responseJsonSchema"] = schema
        body: dict[str, object] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        if config:
            body["generationConfig"] = config
        return body

    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["x-goog-api-key"] = key
        return headers

    async def complete(self, request: ChatRequest) -> Completion:
        headers = self._headers(self._wire.api_key(self.model))
        async with post(self._client, self._wire, self._payload(request), headers) as resp:
            data = await read_json(resp, self._wire, "generateContent answer")
            try:
                text, finish = candidate_text(data)
            except (KeyError, IndexError, TypeError, AttributeError):
                raise malformed(f"answer without candidates[0]: {self._wire.shown(data)}") from None
            return Completion(text, FINISH.get(finish or "STOP", "stop"), usage_of(data) or Usage())

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        finish: str | None = None
        usage: Usage | None = None
        wire = self._stream_wire
        headers = self._headers(self._wire.api_key(self.model))
        async with post(self._client, wire, self._payload(request), headers) as resp:
            async for data in sse_data(resp, wire):
                chunk = decode_json(data, "stream chunk", wire)
                if not isinstance(chunk, dict):
                    raise malformed(f"stream chunk is not an object: {wire.text(data)!r}")
                if "error" in chunk:
                    raise error_event(wire, chunk["error"])
                usage = usage_of(chunk) or usage
                try:
                    text, chunk_finish = candidate_text(chunk)
                except (KeyError, IndexError, TypeError, AttributeError):
                    raise malformed(f"stream chunk without candidates[0]: {wire.text(data)!r}") from None
                if text:
                    yield TextDelta(text)
                finish = chunk_finish or finish
        if finish is None:
            raise BackendError(FailureKind.stream_cut, f"{self.name} stream ended without a finishReason")
        yield StreamFinish(FINISH.get(finish, "stop"), usage or Usage())
