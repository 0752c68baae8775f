"""OpenAI chat completions: vLLM, Ollama's /v1, llama.cpp's server, any cloud GPU box.

Tolerates what real servers do differently (research/real-engines.md): llama-cpp-python's
server (0.3.x) ignores ``stream_options.include_usage`` and sends no usage in a stream, no
``created``, and accepts any model name; vLLM reasoning models add ``reasoning_content``
(not part of the answer text). A stream that ends without usage is counted by stackd and marked
``estimated``: the prompt by the engine's own tokenizer (``PromptCounter``), the completion one
token per content chunk; where the engine has no tokenizer to ask, the prompt count is unknown.

The answer's contract is forwarded: ``response_format`` as given (vLLM's guided decoding,
llama.cpp's ``llama-server``), or as ``{"type": "json_object", "schema": ...}`` for a process
member running llama-cpp-python's server, which turns that into a grammar and refuses OpenAI's
``json_schema`` type; ``tools`` and ``tool_choice`` as given, and the answer's ``tool_calls``
come back whole (a stream's pieces are joined).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing

from stackd.config.models import Model
from stackd.router.backends.base import (
    Wire,
    authorization_conflict,
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
from stackd.router.backends.contract import (
    ToolCallPieces,
    openai_response_format,
    openai_tool_calls,
    runs_llama_cpp_python,
)
from stackd.router.backends.tokens import PromptCounter, chat_template
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


def usage_of(data: Mapping[str, object]) -> Usage | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens")))


class OpenAIBackend:
    def __init__(self, name: str, model: Model, client: HttpClient, redact: Redactor | None = None) -> None:
        self.name = name
        self.model = model
        self.request_model = model.request_model or name
        self._wire = Wire.to(f"{(model.endpoint or '').rstrip('/')}/chat/completions", redact or Redactor())
        self._client = client
        self._counter = PromptCounter(
            model.endpoint or "",
            self.request_model,
            client,
            redact or Redactor(),
            lambda: chat_template(model),
        )
        self._llama_cpp_python = runs_llama_cpp_python(model)

    def not_ready(self) -> str | None:
        return missing_key_reason(self.model, self._wire) or authorization_conflict(self.model, self._wire)

    def unsupported(self, request: ChatRequest) -> str | None:
        return None  # every field of the contract is OpenAI's own

    def _payload(self, request: ChatRequest, stream: bool) -> dict[str, object]:
        body: dict[str, object] = {"model": self.request_model, "messages": request.messages}
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = request.stop
        if request.response_format is not None:
            body["response_format"] = openai_response_format(request.response_format, self._llama_cpp_python)
        if request.tools:
            body["tools"] = request.tools
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def complete(self, request: ChatRequest) -> Completion:
        if self.model.always_stream:
            return await self._complete_streamed(request)
        headers = self._headers(self._wire.api_key(self.model))
        async with post(self._client, self._wire, self._payload(request, False), headers) as resp:
            data = await read_json(resp, self._wire, "chat completion")
            try:
                choice = data["choices"][0]
                text = text_of(choice["message"].get("content"))
                finish = str(choice.get("finish_reason") or "stop")
            except (KeyError, IndexError, TypeError, AttributeError):
                raise malformed(
                    f"chat completion without choices[0].message: {self._wire.shown(data)}"
                ) from None
            calls = openai_tool_calls(choice["message"])
            return Completion(text, finish, usage_of(data) or Usage(), calls)

    async def _complete_streamed(self, request: ChatRequest) -> Completion:
        """The whole answer read from a stream: a caller that goes away closes the connection,
        and an engine that stops only on a closed *stream* (llama-cpp-python's server) stops."""
        pieces: list[str] = []
        async with aclosing(self.stream(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    pieces.append(event.text)
                    continue
                return Completion("".join(pieces), event.finish_reason, event.usage, event.tool_calls)
        raise BackendError(FailureKind.stream_cut, f"{self.name} stream ended before its finish")

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        finish: str | None = None
        usage: Usage | None = None
        chunks = 0  # content chunks: the completion's count when the engine reports none
        calls = ToolCallPieces()
        wire = self._wire
        headers = self._headers(self._wire.api_key(self.model))
        async with post(self._client, wire, self._payload(request, True), headers) as resp:
            async for data in sse_data(resp, wire):
                if data == b"[DONE]":
                    usage = await self._completed(request, usage, chunks)
                    yield StreamFinish(finish or "stop", usage, calls.calls())
                    return
                chunk = decode_json(data, "stream chunk", wire)
                if not isinstance(chunk, dict):
                    raise malformed(f"stream chunk is not an object: {wire.text(data)!r}")
                if "error" in chunk:
                    raise error_event(wire, chunk["error"])
                usage = usage_of(chunk) or usage
                for choice in chunk.get("choices") or ():
                    calls.add((choice.get("delta") or {}).get("tool_calls"))
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if not isinstance(text, str):
                            raise malformed(f"stream chunk with a non-text delta: {wire.text(data)!r}")
                        chunks += 1
                        yield TextDelta(text)
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
        if finish is None:
            raise BackendError(FailureKind.stream_cut, f"{self.name} stream ended before [DONE]")
        # A server that sends a finish_reason but no [DONE] has still answered completely.
        yield StreamFinish(finish, await self._completed(request, usage, chunks), calls.calls())

    async def _completed(self, request: ChatRequest, usage: Usage | None, chunks: int) -> Usage:
        """The stream's usage: the engine's report, with the figures it left out counted here."""
        if usage is not None and not usage.unknown:
            return usage
        prompt = usage.prompt_tokens if usage is not None else None
        completion = usage.completion_tokens if usage is not None else None
        if prompt is None:
            prompt = await self._counter.count(
                request.messages, self._headers(self._wire.api_key(self.model))
            )
        if completion is None:
            completion = chunks  # llama.cpp's servers send one token per content chunk
        return Usage(prompt, completion, estimated=True)
