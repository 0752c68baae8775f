"""Output validators: does an answer meet what the request asked for?

Pure. A request may carry a JSON schema for the answer (OpenAI's ``response_format``:
``{"type": "json_schema", "json_schema": {"name", "schema"}}`` or ``{"type": "json_object"}``)
and tools (OpenAI's ``tools``, each with its ``function.parameters`` schema). The slices answer in
text, so a tool call is an answer that is one JSON object ``{"name": TOOL, "arguments": {...}}``
(``arguments`` may be a JSON string, as OpenAI sends it); it is checked against its tool's
parameters. An answer may be wrapped in one Markdown code fence; nothing else is forgiven.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from stackd.errors import StackdError

if TYPE_CHECKING:  # jsonschema itself is imported by the first request that carries a schema
    from jsonschema import Draft202012Validator

Check = Literal["none", "json_schema", "json_object", "tool_call"]
MAX_REASON = 240


class InvalidSliceRequest(StackdError):
    """A response_format or tool schema that is not usable (422)."""

    status = 422


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, object]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    check: Check
    reason: str
    tool_call: ToolCall | None = None

    @property
    def tool_call_failed(self) -> bool:
        return not self.ok and self.check == "tool_call"


def unfenced(text: str) -> str:
    """``text`` without surrounding whitespace and one Markdown code fence (```json ... ```)."""
    body = text.strip()
    if body.startswith("```") and body.endswith("```") and len(body) >= 6:
        body = body[3:-3]
        first, _, rest = body.partition("\n")
        body = rest if first.strip().isalpha() or not first.strip() else body
    return body.strip()


def _schema_validator(schema: object, where: str) -> Draft202012Validator:
    if not isinstance(schema, dict):
        raise InvalidSliceRequest(f"{where} must be a JSON Schema object")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidSliceRequest(f"{where} is not a valid JSON Schema: {exc.message[:MAX_REASON]}") from None
    return Draft202012Validator(schema)


def _problem(validator: Draft202012Validator, value: object) -> str | None:
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    path = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{path}: {error.message}"[:MAX_REASON]


class AnswerValidator:
    """Built once per request from its ``response_format`` and ``tools``; ``check`` per answer."""

    def __init__(
        self,
        response_format: Mapping[str, object] | None = None,
        tools: Sequence[object] | None = None,
        tool_choice: object = None,
    ) -> None:
        self.schema: dict[str, object] | None = None
        self._answer: Draft202012Validator | None = None
        self._object_only = False
        kind = (response_format or {}).get("type", "text")
        if kind == "json_schema":
            spec = response_format.get("json_schema") if response_format else None
            schema = spec.get("schema") if isinstance(spec, dict) else None
            self._answer = _schema_validator(schema, "response_format.json_schema.schema")
            self.schema = schema if isinstance(schema, dict) else None  # a dict: checked just above
        elif kind == "json_object":
            self._object_only = True
        elif kind != "text":
            raise InvalidSliceRequest(
                f"response_format.type '{kind}' is not one of text, json_object, json_schema"
            )
        self._tools: dict[str, Draft202012Validator] = {}
        for index, tool in enumerate(tools or []):
            function = tool.get("function") if isinstance(tool, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(function, dict) or not isinstance(name, str) or not name:
                raise InvalidSliceRequest(f"tools[{index}].function.name is missing")
            parameters = function.get("parameters") or {"type": "object"}
            self._tools[name] = _schema_validator(parameters, f"tools[{index}].function.parameters")
        self._tool_required = tool_choice == "required" or isinstance(tool_choice, dict)

    @property
    def active(self) -> bool:
        return bool(self._answer or self._object_only or self._tools)

    def check(self, text: str) -> Verdict:
        body = unfenced(text)
        value: object = None
        parsed = False
        with contextlib.suppress(ValueError):
            value, parsed = json.loads(body), True
        if self._tools:
            call = _as_tool_call(value) if parsed else None
            if call is not None:
                return self._check_tool_call(*call)
            if self._tool_required:
                return Verdict(False, "tool_call", "a tool call is required and the answer holds none")
        if self._answer is not None:
            if not parsed:
                return Verdict(False, "json_schema", "the answer is not JSON")
            problem = _problem(self._answer, value)
            if problem is not None:
                return Verdict(False, "json_schema", f"does not match the schema: {problem}")
            return Verdict(True, "json_schema", "matches the schema")
        if self._object_only:
            if not parsed or not isinstance(value, dict):
                return Verdict(False, "json_object", "the answer is not a JSON object")
            return Verdict(True, "json_object", "a JSON object")
        return Verdict(True, "none", "no validator")

    def _check_tool_call(self, name: str, arguments: object) -> Verdict:
        validator = self._tools.get(name)
        if validator is None:
            return Verdict(
                False, "tool_call", f"calls unknown tool '{name[:64]}'; offered: {sorted(self._tools)}"
            )
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return Verdict(False, "tool_call", f"the arguments of '{name}' are not JSON")
        if not isinstance(arguments, dict):
            return Verdict(False, "tool_call", f"the arguments of '{name}' are not a JSON object")
        problem = _problem(validator, arguments)
        if problem is not None:
            return Verdict(
                False, "tool_call", f"arguments of '{name}' do not match its parameters: {problem}"
            )
        return Verdict(True, "tool_call", f"a valid call of '{name}'", ToolCall(name, arguments))


def _as_tool_call(value: object) -> tuple[str, object] | None:
    """(name, arguments) when ``value`` has a tool call's shape."""
    if not isinstance(value, dict):
        return None
    name = value.get("name", value.get("tool"))
    if not isinstance(name, str) or "arguments" not in value:
        return None
    return name, value["arguments"]
