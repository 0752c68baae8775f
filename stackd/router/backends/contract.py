"""The answer's contract (``response_format``, ``tools``, ``tool_choice``) in each protocol's words.

OpenAI's fields are the vocabulary (``ChatRequest``). A backend either forwards them so the
engine constrains its decoding (vLLM's guided decoding, llama.cpp's grammars, Ollama's
``format``), or names what it cannot honour: the router then skips it with that reason
(``Backend.unsupported``), so a caller never gets unconstrained text for a constrained request
without being told. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from stackd.config.models import Model
from stackd.router.types import ChatRequest, ToolCalls


def schema_of(response_format: Mapping[str, object] | None) -> dict[str, object] | None:
    """The JSON Schema of a ``json_schema`` response_format, else None."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def format_kind(request: ChatRequest) -> str | None:
    """``json_object`` or ``json_schema`` when the request constrains its answer's text, else None."""
    kind = (request.response_format or {}).get("type", "text")
    return None if kind == "text" else str(kind)


def tools_wanted(request: ChatRequest) -> bool:
    """Whether the request offers tools the answer may call (``tool_choice: none`` offers none)."""
    return bool(request.tools) and request.tool_choice != "none"


def runs_llama_cpp_python(model: Model) -> bool:
    """A process member running llama-cpp-python's server: its ``response_format`` is
    ``{"type": "json_object", "schema": ...}`` (it refuses OpenAI's ``json_schema`` type)."""
    command = model.process.command if model.process is not None else []
    return any("llama_cpp.server" in part for part in command)


def openai_response_format(
    response_format: Mapping[str, object], llama_cpp_python: bool
) -> Mapping[str, object]:
    """``response_format`` for an OpenAI-compatible server: as given, or llama-cpp-python's form."""
    if not llama_cpp_python or response_format.get("type") != "json_schema":
        return response_format
    schema = schema_of(response_format)
    return {"type": "json_object", "schema": schema} if schema is not None else {"type": "json_object"}


def ollama_format(response_format: Mapping[str, object] | None) -> str | dict[str, object] | None:
    """Ollama's ``format``: ``"json"`` for json_object, the schema itself for json_schema."""
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        return schema_of(response_format) or "json"
    return None


class ToolCallPieces:
    """OpenAI's streamed ``delta.tool_calls``: pieces keyed by ``index``, the first carrying the id
    and the name, the rest appending to ``arguments``. ``calls()`` gives them whole."""

    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}

    def add(self, pieces: object) -> None:
        for piece in pieces if isinstance(pieces, list) else ():
            if not isinstance(piece, dict):
                continue
            call = self._calls.setdefault(int(piece.get("index") or 0), _Call())
            if piece.get("id"):
                call.id = str(piece["id"])
            function = piece.get("function") or {}
            if function.get("name"):
                call.name = str(function["name"])
            arguments = function.get("arguments")
            if arguments:
                call.arguments += arguments if isinstance(arguments, str) else json.dumps(arguments)

    def calls(self) -> ToolCalls:
        return tuple(self._calls[i].to_dict() for i in sorted(self._calls))


@dataclass(slots=True)
class _Call:
    """One call being assembled from its streamed pieces."""

    id: str = ""
    name: str = ""
    arguments: str = ""

    def to_dict(self) -> dict[str, object]:
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}


def openai_tool_calls(message: object) -> ToolCalls:
    """The whole ``tool_calls`` of an OpenAI answer's message (arguments kept as JSON text)."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not calls or not isinstance(calls, list):
        return ()  # most answers: no assembly to pay for
    pieces = ToolCallPieces()
    pieces.add([{**c, "index": i} for i, c in enumerate(calls) if isinstance(c, dict)])
    return pieces.calls()


def ollama_tool_calls(message: object) -> ToolCalls:
    """Ollama's ``message.tool_calls`` (arguments as an object) in OpenAI's shape."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    out: list[dict[str, object]] = []
    for i, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments", {})
        out.append(
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": str(function.get("name", "")),
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    return tuple(out)


def tool_call_text(calls: ToolCalls) -> str:
    """The first call as the text the slice validators read: ``{"name", "arguments"}``."""
    function = calls[0].get("function")
    if not isinstance(function, dict):
        function = {}
    return json.dumps({"name": function.get("name"), "arguments": function.get("arguments")})
