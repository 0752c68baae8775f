"""A simulator of an OpenAI-compatible server (vLLM, llama.cpp, LiteLLM, api.openai.com).

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (JSON or
SSE with ``data: {...}`` chunks, ``choices[0].delta``, an optional usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``), ``GET /health``.
Errors are ``{"error": {"message", "type", "param", "code"}}``.

The gateway benchmark runs against this simulator with zero latency, so answers are rendered
once per (model, answer, tokens) and only the usage numbers are formatted per request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import lru_cache

from aiohttp import web

from stackd.sim.control import SimControl, SimToolCall, count_prompt_tokens, split_answer
from stackd.sim.server import SimServer

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}
_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found"}
_USAGE = b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}'
_DONE = b"data: [DONE]\n\n"


def openai_error(status: int, message: str, code: str | None = None) -> web.Response:
    """An OpenAI-shaped error body with ``status``."""
    error = {
        "message": message,
        "type": _ERROR_TYPES.get(status, "server_error"),
        "param": None,
        "code": code or _ERROR_CODES.get(status),
    }
    return web.json_response({"error": error}, status=status)


def prompt_text(body: dict[str, object]) -> str:
    """All text of the request's messages (string or content-part lists) or its ``prompt``."""
    parts: list[str] = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    return " ".join(parts)


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@lru_cache(maxsize=256)
def _chat_parts(model: str, answer: str, tokens: int, created: int, chat: bool) -> tuple[bytes, list[bytes]]:
    """(JSON body without its usage and closing brace, SSE content chunks) for one answer."""
    if chat:
        choice: dict[str, object] = {
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "logprobs": None,
            "finish_reason": "stop",
        }
        kind, prefix = "chat.completion", "chatcmpl-sim"
    else:
        choice = {"index": 0, "text": answer, "logprobs": None, "finish_reason": "stop"}
        kind, prefix = "text_completion", "cmpl-sim"
    head = {"id": prefix, "object": kind, "created": created, "model": model, "choices": [choice]}
    body_head = _dumps(head)[:-1] + b","

    def chunk(delta: dict[str, object] | str, finish: str | None) -> bytes:
        if chat:
            part: dict[str, object] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            event_kind = "chat.completion.chunk"
        else:
            part = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
            event_kind = "text_completion"
        event = {"id": prefix, "object": event_kind, "created": created, "model": model, "choices": [part]}
        return b"data: " + _dumps(event) + b"\n\n"

    chunks = [chunk({"role": "assistant", "content": ""}, None)] if chat else []
    chunks += [chunk({"content": piece} if chat else piece, None) for piece in split_answer(answer, tokens)]
    chunks.append(chunk({} if chat else "", "stop"))
    return body_head, chunks


def _usage_chunk(model: str, created: int, chat: bool, prompt: int, completion: int) -> bytes:
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = _dumps(
        {
            "id": "chatcmpl-sim" if chat else "cmpl-sim",
            "object": kind,
            "created": created,
            "model": model,
            "choices": [],
        }
    )
    return b"data: " + head[:-1] + b"," + _USAGE % (prompt, completion, prompt + completion) + b"}\n\n"


class OpenAIChatRoutes:
    """The chat/completions handlers, shared by ``OpenAISim`` and the Ollama simulator's /v1."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.created = int(time.time())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = self.server.body_of(request)
        if not isinstance(body, dict) or not body.get("model") or not isinstance(body["model"], str):
            return openai_error(400, "you must provide a model parameter")
        if chat and not isinstance(body.get("messages"), list):
            return openai_error(400, "'messages' is a required property")
        model = body["model"]
        control = self.server.control
        tokens = max(1, control.tokens)
        head, chunks = _chat_parts(model, control.answer, tokens, self.created, chat)
        prompt = count_prompt_tokens(prompt_text(body))
        if chat and control.tool_calls and body.get("tools"):
            return await self._tool_calls(request, body, control.tool_calls, prompt, tokens)
        if not body.get("stream"):
            payload = head + _USAGE % (prompt, tokens, prompt + tokens) + b"}"
            return await self.server.send_body(request, payload)
        stream = await self.server.open_stream(request, "text/event-stream")
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            chunks = [*chunks, _usage_chunk(model, self.created, chat, prompt, tokens)]
        await stream.send_all([*chunks, _DONE])
        return stream.response

    async def _tool_calls(
        self,
        request: web.Request,
        body: dict[str, object],
        calls: list[SimToolCall],
        prompt: int,
        tokens: int,
    ) -> web.StreamResponse:
        """An answer that calls tools (as vLLM or llama.cpp's server sends one for a named tool)."""
        base = {"id": "chatcmpl-sim", "created": self.created, "model": body["model"]}
        usage = {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
            answer = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return await self.server.send_body(request, _dumps(answer))

        def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return (
                b"data: " + _dumps({**base, "object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"
            )

        pieces = [chunk({"role": "assistant", "content": None})]
        for index, call in enumerate(calls):
            arguments = str(call["function"]["arguments"])
            half = len(arguments) // 2
            first = {**call, "function": {"name": call["function"]["name"], "arguments": arguments[:half]}}
            pieces.append(chunk({"tool_calls": [{"index": index, **first}]}))
            pieces.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]})
            )
        pieces.append(chunk({}, "tool_calls"))
        stream = await self.server.open_stream(request, "text/event-stream")
        await stream.send_all([*pieces, _DONE])
        return stream.response


class OpenAISim(SimServer):
    """OpenAI-compatible server. ``models`` are listed by ``/v1/models``; any model name is served."""

    kind = "openai"
    stream_garbage = b'data: {"id": "chatcmpl-sim", "choices": [{"delta": \n\n'

    default_models = ("sim-model",)

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        control: SimControl | None = None,
        *,
        models: Sequence[str] | None = None,
        record: bool = True,
    ) -> None:
        super().__init__(host, port, control, models=models, record=record)
        self._chat = OpenAIChatRoutes(self)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self._list_models)
        router.add_post("/v1/chat/completions", self._chat.chat_completions)
        router.add_post("/v1/completions", self._chat.completions)
        router.add_get("/health", self._health)

    def error(self, status: int, message: str) -> web.Response:
        return openai_error(status, message)

    def auth_failure(self, request: web.Request) -> web.Response:
        if self.presented_key(request) is None:
            return openai_error(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.")
        return openai_error(401, "Incorrect API key provided.")

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        data = [
            {"id": m, "object": "model", "created": self._chat.created, "owned_by": "stackd-sim"}
            for m in self.models
        ]
        return await self.send_body(request, _dumps({"object": "list", "data": data}))

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return await self.send_body(request, b'{"status":"ok"}')
