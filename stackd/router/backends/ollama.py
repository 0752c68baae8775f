"""Ollama's native ``POST /api/chat`` (NDJSON when streaming).

Every call carries the model's configured ``options`` (``num_gpu: 0``, ``num_ctx``) and
``keep_alive``: Ollama reloads a model whose options change between calls
(research/ollama-gpustack.md). Usage is ``prompt_eval_count`` / ``eval_count`` of the final
``done`` object. The data path uses the shared HTTP client rather than the ``ollama``
package's httpx client, which collapses under concurrency here (docs/benchmarks.md); the
``ollama`` package stays on the control path (pull, load, unload).

The answer's contract: ``response_format`` becomes Ollama's ``format`` (``"json"`` for
``json_object``, the JSON Schema itself for ``json_schema``: Ollama constrains decoding to it, as
the official client's ``format=`` does), ``tools`` go as they are (Ollama reads OpenAI's function
shape) and its ``tool_calls`` come back in OpenAI's shape. Ollama has no ``tool_choice``: ``none``
sends no tools, ``auto`` is its behaviour, and a required or named tool is refused (the router
skips this backend, saying why).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from stackd.config.models import Model
from stackd.router.backends.base import (
    Wire,
    decode_json,
    error_event,
    lines,
    malformed,
    post,
    read_json,
    text_of,
    token_count,
)
from stackd.router.backends.contract import ollama_format, ollama_tool_calls, tools_wanted
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

HEADERS = {"Content-Type": "application/json"}


def usage_of(data: Mapping[str, object]) -> Usage:
    # Ollama leaves prompt_eval_count out when the whole prompt came from its cache: unknown
    return Usage(token_count(data.get("prompt_eval_count")), token_count(data.get("eval_count")))


class OllamaBackend:
    def __init__(
        self,
        name: str,
        model: Model,
        client: HttpClient,
        server_url: str,
        redact: Redactor | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.request_model = model.request_model or name
        self._wire = Wire.to(f"{(model.endpoint or server_url).rstrip('/')}/api/chat", redact or Redactor())
        self._client = client

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        choice = request.tool_choice
        if request.tools and (choice == "required" or isinstance(choice, dict)):
            return "Ollama's /api/chat has no tool_choice: it cannot be made to call a tool"
        return None

    def _payload(self, request: ChatRequest, stream: bool) -> dict[str, object]:
        options: dict[str, object] = dict(self.model.ollama.options) if self.model.ollama else {}
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.stop:
            options["stop"] = request.stop
        body: dict[str, object] = {
            "model": self.request_model,
            "messages": [
                {"role": m.get("role", "user"), "content": text_of(m.get("content"))}
                for m in request.messages
            ],
            "stream": stream,
            "options": options,
        }
        if self.model.ollama is not None:
            body["keep_alive"] = self.model.ollama.keep_alive
        constraint = ollama_format(request.response_format)
        if constraint is not None:
            body["format"] = constraint
        if tools_wanted(request):
            body["tools"] = request.tools
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        wire = self._wire
        async with post(self._client, wire, self._payload(request, False), HEADERS) as resp:
            data = await read_json(resp, wire, "chat answer")
            if isinstance(data, dict) and "error" in data:
                raise error_event(wire, data["error"])
            try:
                text = text_of(data["message"].get("content"))
            except (KeyError, TypeError, AttributeError):
                raise malformed(f"chat answer without message: {wire.shown(data)}") from None
            calls = ollama_tool_calls(data["message"])
            finish = "tool_calls" if calls else str(data.get("done_reason") or "stop")
            return Completion(text, finish, usage_of(data), calls)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        wire = self._wire
        calls: list[dict[str, Any]] = []
        async with post(self._client, wire, self._payload(request, True), HEADERS) as resp:
            async for raw in lines(resp, wire):
                line = raw.strip()
                if not line:
                    continue
                chunk = decode_json(line, "stream line", wire)
                if not isinstance(chunk, dict):
                    raise malformed(f"stream line is not an object: {wire.text(line)!r}")
                if "error" in chunk:
                    raise error_event(wire, chunk["error"])
                calls += ollama_tool_calls(chunk.get("message"))
                text = (chunk.get("message") or {}).get("content")
                if text:
                    if not isinstance(text, str):
                        raise malformed(f"stream line with a non-text message: {wire.text(line)!r}")
                    yield TextDelta(text)
                if chunk.get("done"):
                    finish = "tool_calls" if calls else str(chunk.get("done_reason") or "stop")
                    yield StreamFinish(finish, usage_of(chunk), tuple(calls))
                    return
        raise BackendError(FailureKind.stream_cut, f"{self.name} stream ended before done")
