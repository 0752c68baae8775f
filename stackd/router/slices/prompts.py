"""A slice's request: its template first, its sampling defaults, the tools spelled out.

The tools a request offers are described in the system prompt with the shape of a call, for a
model that answers them in text; the request's ``tools`` also reach the engine (docs/router.md). A pinned caller's temperature wins over
the request's, the request's over the slice's default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

from stackd.config.slices import SliceRouting, Template
from stackd.router.types import ChatRequest

TOOL_CALL_SHAPE = '{"name": TOOL_NAME, "arguments": {...}}'


def template_of(routing: SliceRouting, slice_name: str) -> Template | None:
    settings = routing.settings.get(slice_name)
    return settings.template if settings is not None else None


def system_text(
    routing: SliceRouting,
    slice_name: str,
    schema: Mapping[str, object] | None,
    tools: Sequence[object] | None,
) -> str | None:
    parts: list[str] = []
    template = template_of(routing, slice_name)
    if template is not None:
        parts.append(
            routing.templates[template].replace("{schema}", json.dumps(schema) if schema else "none")
        )
    if tools:
        functions = [t.get("function", {}) for t in tools if isinstance(t, dict)]
        listing = json.dumps(
            [{"name": f.get("name"), "parameters": f.get("parameters", {})} for f in functions]
        )
        parts.append(f"Tools: {listing}. To call one, reply with only {TOOL_CALL_SHAPE}.")
    return "\n\n".join(parts) or None


def slice_request(
    routing: SliceRouting,
    slice_name: str,
    chat: ChatRequest,
    schema: Mapping[str, object] | None = None,
    tools: Sequence[object] | None = None,
    pinned_temperature: float | None = None,
) -> ChatRequest:
    messages = list(chat.messages)
    text = system_text(routing, slice_name, schema, tools)
    first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    if text is not None and routing.template_in == "user" and first_user is not None:
        content = messages[first_user].get("content")
        if isinstance(content, str):
            messages[first_user] = {**messages[first_user], "content": f"{text}\n\n{content}"}
            text = None
    if text is not None:
        if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
            messages[0] = {**messages[0], "content": f"{text}\n\n{messages[0]['content']}"}
        else:
            messages.insert(0, {"role": "system", "content": text})
    settings = routing.settings.get(slice_name)
    temperature = pinned_temperature if pinned_temperature is not None else chat.temperature
    top_p, max_tokens = chat.top_p, chat.max_tokens
    if settings is not None:
        temperature = settings.temperature if temperature is None else temperature
        top_p = settings.top_p if top_p is None else top_p
        max_tokens = settings.max_tokens if max_tokens is None else max_tokens
    return replace(chat, messages=messages, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
