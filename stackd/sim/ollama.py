"""A simulator of the Ollama server API (docs/api.md).

Routes: ``GET /api/tags``, ``POST /api/pull`` (NDJSON progress: pulling manifest, pulling
<digest> with total/completed, verifying sha256 digest, writing manifest, removing any unused
layers, success), ``POST /api/generate`` and ``POST /api/chat`` (NDJSON or one JSON; an empty
prompt loads, ``done_reason: "load"``; with ``keep_alive: 0`` it unloads, ``"unload"``),
``GET /api/ps``, ``POST /api/show``, ``DELETE /api/delete``, ``GET /api/version``, ``GET /``, and
the OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``. Errors are ``{"error": "..."}``;
a failure during a stream is a last ``{"error": ...}`` line under status 200.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from stackd.sim.control import Fault, SimControl, count_prompt_tokens, split_answer
from stackd.sim.ollama_state import ModelFile, OllamaState, normalize_tag, parse_keep_alive
from stackd.sim.openai import OpenAIChatRoutes, prompt_text
from stackd.sim.server import SimServer, SimStream

NDJSON = "application/x-ndjson"
PULL_FAILED = "max retries exceeded: unexpected EOF"
NOT_IN_REGISTRY = "pull model manifest: file does not exist"


def ollama_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _line(value: dict[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class OllamaSim(SimServer):
    """Ollama server. ``pulled`` maps tags present at start to their weights size in bytes.

    ``registry`` maps the tags a pull can fetch to their size; None lets any tag be pulled
    (``default_pull_bytes``). ``reloads[tag]`` counts reloads forced by changed runner options,
    ``loads[tag]`` every load. ``clock`` drives keep_alive expiry.
    """

    kind = "ollama"
    stream_garbage = b'{"model":"sim","response":"tru\n'

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        control: SimControl | None = None,
        *,
        pulled: Mapping[str, int] | None = None,
        registry: Mapping[str, int] | None = None,
        default_pull_bytes: int = 1_000_000_000,
        pull_steps: int = 4,
        kv_bytes_per_token: int = 65_536,
        clock: Callable[[], float] | None = None,
        record: bool = True,
    ) -> None:
        super().__init__(host, port, control, record=record)
        extra = {} if clock is None else {"clock": clock}
        self.state = OllamaState(
            pulled or {},
            registry,
            default_pull_bytes=default_pull_bytes,
            kv_bytes_per_token=kv_bytes_per_token,
            **extra,
        )
        self.pull_steps = max(2, pull_steps)
        self._openai = OpenAIChatRoutes(self)

    @property
    def reloads(self) -> Counter[str]:
        return self.state.reloads

    @property
    def loads(self) -> Counter[str]:
        return self.state.loads

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self._root)
        router.add_get("/api/version", self._version)
        router.add_get("/api/tags", self._tags)
        router.add_get("/api/ps", self._ps)
        router.add_post("/api/show", self._show)
        router.add_delete("/api/delete", self._delete)
        router.add_post("/api/pull", self._pull)
        router.add_post("/api/generate", self._generate)
        router.add_post("/api/chat", self._chat)
        router.add_post("/v1/chat/completions", self._openai.chat_completions)
        router.add_get("/v1/models", self._v1_models)

    def error(self, status: int, message: str) -> web.Response:
        return ollama_error(status, message)

    async def _json(self, request: web.Request, value: object) -> web.StreamResponse:
        return await self.send_body(request, json.dumps(value).encode())

    def _request_model(self, request: web.Request) -> tuple[dict[str, object], str | None]:
        parsed = self.body_of(request)
        body: dict[str, object] = parsed if isinstance(parsed, dict) else {}
        name = body.get("model") or body.get("name")
        return body, normalize_tag(name) if isinstance(name, str) and name else None

    def _not_found(self, tag: str) -> web.Response:
        return ollama_error(404, f'model "{tag}" not found, try pulling it first')

    async def _root(self, request: web.Request) -> web.StreamResponse:
        return await self.send_body(request, b"Ollama is running", content_type="text/plain")

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return await self._json(request, {"version": "0.33.0"})

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        models = [
            {
                "name": f.tag,
                "model": f.tag,
                "modified_at": f.modified_at,
                "size": f.size,
                "digest": f.digest,
                "details": f.details,
            }
            for f in self.state.files.values()
        ]
        return await self._json(request, {"models": models})

    async def _v1_models(self, request: web.Request) -> web.StreamResponse:
        data = [{"id": t, "object": "model", "created": 0, "owned_by": "library"} for t in self.state.files]
        return await self._json(request, {"object": "list", "data": data})

    async def _ps(self, request: web.Request) -> web.StreamResponse:
        runners = sorted(
            self.state.running().values(),
            key=lambda r: float("inf") if r.expires_at is None else r.expires_at,
            reverse=True,
        )
        models = [
            {
                "name": r.model.tag,
                "model": r.model.tag,
                "size": r.size,
                "size_vram": r.size_vram,
                "digest": r.model.digest,
                "details": r.model.details,
                "expires_at": r.expires_iso(),
                "context_length": r.num_ctx,
            }
            for r in runners
        ]
        return await self._json(request, {"models": models})

    async def _show(self, request: web.Request) -> web.StreamResponse:
        _, tag = self._request_model(request)
        model = self.state.files.get(tag or "")
        if model is None:
            return ollama_error(404, f"model '{tag}' not found")
        info = {
            "general.architecture": model.family,
            "general.parameter_count": int(model.layers[0][1] / 0.6),
            f"{model.family}.context_length": model.context_length,
        }
        return await self._json(
            request,
            {
                "license": "",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model.tag}\n',
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": model.details,
                "model_info": info,
                "capabilities": ["completion"],
                "modified_at": model.modified_at,
            },
        )

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        _, tag = self._request_model(request)
        if tag is None or self.state.files.pop(tag, None) is None:
            return ollama_error(404, f"model '{tag}' not found")
        return web.Response(status=200)

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        body, tag = self._request_model(request)
        if tag is None:
            return ollama_error(400, "model is required")
        model = self.state.pullable(tag)
        if body.get("stream", True) is False:
            if model is None or self.control.fault is Fault.pull_fails_halfway:
                return ollama_error(500, NOT_IN_REGISTRY if model is None else PULL_FAILED)
            self.state.files[model.tag] = model
            return await self._json(request, {"status": "success"})
        stream = await self.open_stream(request, NDJSON)
        await stream.send(_line({"status": "pulling manifest"}))
        if model is None:
            await stream.send(_line({"error": NOT_IN_REGISTRY}))
            return stream.response
        for index, (digest, total) in enumerate(model.layers):
            status = f"pulling {digest[:12]}"
            for step in range(self.pull_steps + 1):
                failing = self.control.fault is Fault.pull_fails_halfway
                if index == 0 and failing and step > self.pull_steps // 2:
                    await stream.send(_line({"error": PULL_FAILED}))
                    return stream.response
                completed = total * step // self.pull_steps
                await stream.send(
                    _line(
                        {
                            "status": status,
                            "digest": f"sha256:{digest}",
                            "total": total,
                            "completed": completed,
                        }
                    )
                )
        for status in ("verifying sha256 digest", "writing manifest", "removing any unused layers"):
            await stream.send(_line({"status": status}))
        self.state.files[model.tag] = model
        await stream.send(_line({"status": "success"}))
        return stream.response

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body, tag = self._request_model(request)
        if tag is None:
            return ollama_error(400, "model is required")
        model = self.state.files.get(tag)
        if model is None:
            return self._not_found(tag)
        try:
            keep_alive = parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            return ollama_error(400, str(exc))
        prompt = prompt_text(body) if chat else str(body.get("prompt") or "")
        empty = not body.get("messages") if chat else not prompt
        if empty and keep_alive == 0:
            self.state.expire(tag)
            return await self._json(request, self._final(tag, chat, "", "unload"))
        _, loaded_now = self.state.schedule(model, body.get("options"), keep_alive)
        if loaded_now and self.control.latency_ms:
            await asyncio.sleep(self.control.latency_ms / 1000)  # loading takes a while
        if empty:
            return await self._json(request, self._final(tag, chat, "", "load"))
        control = self.control
        counts = {
            "prompt_eval_count": count_prompt_tokens(prompt),
            "eval_count": max(1, control.tokens),
            "total_duration": 1_000_000,
            "load_duration": 0,
            "prompt_eval_duration": 100_000,
            "eval_duration": 900_000,
        }
        if body.get("stream", True) is False:
            return await self._json(request, {**self._final(tag, chat, control.answer, "stop"), **counts})
        stream = await self.open_stream(request, NDJSON)
        await self._stream_answer(stream, tag, chat, counts)
        return stream.response

    async def _stream_answer(self, stream: SimStream, tag: str, chat: bool, counts: dict[str, int]) -> None:
        for piece in split_answer(self.control.answer, self.control.tokens):
            line: dict[str, object] = {"model": tag, "created_at": _now(), "done": False}
            if chat:
                line["message"] = {"role": "assistant", "content": piece}
            else:
                line["response"] = piece
            await stream.send(_line(line))
        await stream.send(_line({**self._final(tag, chat, "", "stop"), **counts}))

    @staticmethod
    def _final(tag: str, chat: bool, text: str, reason: str) -> dict[str, object]:
        final: dict[str, object] = {"model": tag, "created_at": _now()}
        if chat:
            final["message"] = {"role": "assistant", "content": text}
        else:
            final["response"] = text
        final.update(done=True, done_reason=reason)
        return final

    def pulled_file(self, tag: str) -> ModelFile | None:
        """The pulled file for ``tag`` (for assertions), or None."""
        return self.state.files.get(normalize_tag(tag))
