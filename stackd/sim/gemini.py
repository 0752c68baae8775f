"""A simulator of the Gemini API (generativelanguage.googleapis.com).

Routes (under ``/v1beta`` and ``/v1``): ``POST models/{model}:generateContent``,
``POST models/{model}:streamGenerateContent`` (``?alt=sse`` gives ``data: {...}`` events,
otherwise one streamed JSON array), ``GET models`` and ``GET models/{model}``.
The key travels in ``x-goog-api-key`` or the ``key`` query parameter. As on the real API, a
missing key is 403 PERMISSION_DENIED and a wrong one is 400 INVALID_ARGUMENT with reason
API_KEY_INVALID. Errors are ``{"error": {"code", "message", "status"}}``.
"""

from __future__ import annotations

import json

from aiohttp import web

from stackd.sim.control import count_prompt_tokens, split_answer
from stackd.sim.server import SimServer

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def gemini_error(status: int, message: str, details: list[dict[str, str]] | None = None) -> web.Response:
    error: dict[str, object] = {"code": status, "message": message, "status": _STATUS.get(status, "INTERNAL")}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)


def _contents_text(body: dict[str, object]) -> str:
    parts: list[str] = []
    contents = body.get("contents")
    blocks = list(contents) if isinstance(contents, list) else []
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        blocks.append(system)
    for block in blocks:
        for part in block.get("parts") or [] if isinstance(block, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return " ".join(parts)


class GeminiSim(SimServer):
    """Gemini API. ``models`` (bare ids) are listed as ``models/<id>``; any model name is served."""

    kind = "gemini"
    stream_garbage = b'data: {"candidates": [{"content": \r\n\r\n'

    default_models = ("gemini-sim-flash",)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for version in ("/v1beta", "/v1"):
            router.add_get(f"{version}/models", self._list_models)
            router.add_get(version + "/models/{model}", self._get_model)
            router.add_post(version + "/models/{model_action}", self._generate)

    def error(self, status: int, message: str) -> web.Response:
        return gemini_error(status, message)

    def presented_key(self, request: web.Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key")

    def auth_failure(self, request: web.Request) -> web.Response:
        if self.presented_key(request) is None:
            return gemini_error(403, _NO_KEY)
        reason = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
        }
        return gemini_error(400, "API key not valid. Please pass a valid API key.", [reason])

    def _describe(self, model: str) -> dict[str, object]:
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 8192,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        try:
            page_size = int(request.query.get("pageSize", "50"))
        except ValueError:
            return gemini_error(400, "Invalid value for pageSize")
        models = [self._describe(m) for m in self.models[: max(1, page_size)]]
        body: dict[str, object] = {"models": models}
        if page_size < len(self.models):
            body["nextPageToken"] = "sim-next-page"
        return await self.send_body(request, json.dumps(body).encode())

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        return await self.send_body(request, json.dumps(self._describe(request.match_info["model"])).encode())

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, action = request.match_info["model_action"].partition(":")
        if action not in ("generateContent", "streamGenerateContent"):
            return gemini_error(404, f"Method {action!r} is not supported for models/{model}.")
        body = self.body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("contents"), list) or not body["contents"]:
            return gemini_error(400, "* GenerateContentRequest.contents: contents is not specified")
        response_id = f"sim{self.next_serial():08d}"
        control = self.control
        tokens = max(1, control.tokens)
        prompt = count_prompt_tokens(_contents_text(body))
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": tokens,
            "totalTokenCount": prompt + tokens,
        }

        def reply(text: str, finish: bool, usage_metadata: dict[str, int]) -> dict[str, object]:
            candidate: dict[str, object] = {
                "content": {"parts": [{"text": text}], "role": "model"},
                "index": 0,
            }
            if finish:
                candidate["finishReason"] = "STOP"
            return {
                "candidates": [candidate],
                "usageMetadata": usage_metadata,
                "modelVersion": model,
                "responseId": response_id,
            }

        if action == "generateContent":
            return await self.send_body(request, json.dumps(reply(control.answer, True, usage)).encode())
        pieces = split_answer(control.answer, tokens)
        partial_usage = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        events = [
            reply(p, i == len(pieces) - 1, usage if i == len(pieces) - 1 else partial_usage)
            for i, p in enumerate(pieces)
        ]
        sse = request.query.get("alt") == "sse"
        stream = await self.open_stream(request, "text/event-stream" if sse else "application/json")
        for index, event in enumerate(events):
            data = json.dumps(event).encode()
            if sse:
                await stream.send(b"data: " + data + b"\r\n\r\n")
            else:
                await stream.send((b"[" if index == 0 else b",\r\n") + data)
        if not sse:
            await stream.send(b"]")
        return stream.response
