"""JSON views of internal values, shared by the API and the offline CLI."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import TypeAdapter

from stackd.config.models import Model, StacksConfig
from stackd.planner.plan import Plan

_plan_adapter = TypeAdapter(Plan)


def plan_json(plan: Plan) -> dict[str, Any]:
    body: dict[str, Any] = _plan_adapter.dump_python(plan, mode="json")
    return body


def redact_url(url: str | None) -> str | None:
    """Drop userinfo and query from a URL: a key placed there through ${VAR} never leaves."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def model_json(name: str, model: Model) -> dict[str, Any]:
    """A member as the API shows it. Secrets: only the *name* of the key's env var appears."""
    return {
        "name": name,
        "runtime": model.runtime.value,
        "placement": model.placement.value,
        "api": model.api.value,
        "endpoint": redact_url(model.endpoint),
        "memory_mib": model.memory_mib,
        "lifecycle": model.lifecycle.value,
        "swap_group": model.swap_group,
        "container": model.docker.container if model.docker else None,
        "ollama_tag": model.ollama.tag if model.ollama else None,
        "api_key_env": model.remote.api_key_env if model.remote else None,
        "description": model.description,
    }


def stack_json(config: StacksConfig, name: str, active: str | None) -> dict[str, Any]:
    stack = config.stacks[name]
    return {
        "name": name,
        "description": stack.description,
        "active": name == active,
        "default": name == config.default_stack,
        "members": list(stack.member_names),
        "roles": dict(stack.roles),
        "reason_chain": config.chain_for(name),
    }
