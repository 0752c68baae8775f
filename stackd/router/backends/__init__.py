"""Backends per protocol and the factory that picks one for a config model."""

from __future__ import annotations

from stackd.config.models import Api, StacksConfig
from stackd.config.secrets import Secrets
from stackd.router.backends.anthropic import AnthropicBackend
from stackd.router.backends.base import Backend
from stackd.router.backends.gemini import GeminiBackend
from stackd.router.backends.ollama import OllamaBackend
from stackd.router.backends.openai import OpenAIBackend
from stackd.router.backends.sampling import SampledBackend
from stackd.router.http_client import HttpClient
from stackd.router.redaction import Redactor

__all__ = ["Backend", "build_backend"]


def build_backend(
    config: StacksConfig,
    name: str,
    client: HttpClient,
    endpoint: str | None = None,
    secrets: Secrets | None = None,
) -> Backend | None:
    """The backend for config model ``name``, or None when its api is not a chat protocol (http).
    ``endpoint`` replaces the configured one (a process member's port is picked at its start).
    Its failures redact every secret of ``config``, not only its own key; its key is read from
    ``secrets`` (the daemon's environment when None)."""
    model = config.models[name]
    if endpoint is not None:
        model = model.model_copy(update={"endpoint": endpoint})
    redact = Redactor.for_config(config, secrets)
    backend: Backend
    match model.api:
        case Api.openai:
            backend = OpenAIBackend(name, model, client, redact)
        case Api.anthropic:
            backend = AnthropicBackend(name, model, client, redact)
        case Api.gemini:
            backend = GeminiBackend(name, model, client, redact)
        case Api.ollama:
            backend = OllamaBackend(name, model, client, config.ollama.url, redact)
        case Api.http:
            return None
    return backend if model.sampling is None else SampledBackend(backend, model.sampling)
