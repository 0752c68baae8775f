"""Counting a prompt with the engine's own tokenizer, for an engine whose stream reports no usage.

llama-cpp-python's server (0.3.x, what the embedded stacks run) ignores
``stream_options.include_usage``: its streamed chunks carry no ``usage``, so a streamed call
would otherwise cost "0 prompt tokens". It does expose its tokenizer at
``/extras/tokenize/count`` (next to ``/v1``, not under it). What it is given is the prompt the
engine itself built: the messages rendered with the chat template of the member's GGUF
(``tokenizer.chat_template``, read from the header once), the way llama-cpp-python renders it
(jinja2, ``trim_blocks``, ``lstrip_blocks``, ``add_generation_prompt``) and tokenized as it
tokenizes it (BOS added, special tokens parsed). Without a template to render (a GGUF stackd cannot
locate, or none in it) the messages' text and roles are counted instead: a low estimate. Either
way the usage is marked estimated, as stackd's count rather than the engine's report.

An engine without that endpoint (404, 405) is remembered: its prompt count is then unknown
(``None``), never a made-up 0, and it is not asked again until the backend is rebuilt. A count
that fails for another reason (a timeout, a 500) is unknown for that call only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stackd.config.gguf_header import HeaderCache, read_header
from stackd.config.models import Model
from stackd.drivers.model_packages import ModelPackageMissing, shipped_file
from stackd.router.backends.base import Wire, post, read_json, text_of, token_count
from stackd.router.http_client import HttpClient
from stackd.router.redaction import Redactor
from stackd.router.types import BackendError

COUNT_PATH = "/extras/tokenize/count"
COUNT_TIMEOUT_S = 5.0  # a count waits behind the engine's other calls; the answer is already whole
ABSENT = (404, 405)


def engine_root(endpoint: str) -> str:
    """The engine's base URL: an OpenAI endpoint without its trailing ``/v1``."""
    root = endpoint.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """What a chat template wraps: each message's role and text, one after the other."""
    return "\n".join(f"{m.get('role', '')}\n{text_of(m.get('content'))}" for m in messages)


TEMPLATE_KEY = "tokenizer.chat_template"
_TEMPLATES = HeaderCache(capacity=16)


def model_gguf(model: Model) -> Path | None:
    """The GGUF a process member's engine loads: its command's ``--model`` when it names a file,
    else the file its ``model_package`` ships whole (an assembled one lives in the state dir,
    which a backend does not know: None)."""
    process = model.process
    if process is None:
        return None
    command = process.command  # not "-m": ``python -m llama_cpp.server`` has one too
    if "--model" in command[:-1]:
        given = command[command.index("--model") + 1]
        if "${" not in given:
            return Path(given)
    if process.model_package:
        try:
            return shipped_file(process.model_package)
        except ModelPackageMissing:
            return None
    return None


def chat_template(model: Model) -> str | None:
    """The chat template in the member's GGUF header, or None."""
    path = model_gguf(model)
    if path is None or not path.is_file():
        return None
    try:
        fields = _TEMPLATES.get(path, lambda p: read_header(p, lambda key: key == TEMPLATE_KEY))
    except (OSError, ValueError):
        return None
    template = fields.get(TEMPLATE_KEY)
    return template if isinstance(template, str) else None


def render(template: str, messages: list[dict[str, Any]]) -> str | None:
    """``messages`` as llama-cpp-python's ``Jinja2ChatFormatter`` renders them, or None when the
    template fails on them. jinja2 is imported here: only a daemon with such a member needs it."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        compiled = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
        return compiled.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
    except TemplateError:
        return None


class PromptCounter:
    """Asks one engine how many tokens a prompt is. ``count`` never raises."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        client: HttpClient,
        redact: Redactor,
        template: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._wire = Wire.to(f"{engine_root(endpoint)}{COUNT_PATH}", redact)
        self._model = model
        self._client = client
        self._absent = not endpoint  # no endpoint, nothing to ask
        self._template_of = template
        self._template: str | None = None
        self._template_read = False

    async def count(self, messages: list[dict[str, Any]], headers: dict[str, str]) -> int | None:
        """The prompt's tokens by the engine's tokenizer, or None when it cannot say. ``headers``
        are the chat call's (its key: the tokenizer is behind the same door)."""
        if self._absent:
            return None
        if not self._template_read:  # once: the header read is a file read, off the event loop
            self._template = await asyncio.to_thread(self._template_of)
            self._template_read = True
        rendered = render(self._template, messages) if self._template else None
        payload = {"model": self._model, "input": rendered if rendered is not None else prompt_text(messages)}
        try:
            async with asyncio.timeout(COUNT_TIMEOUT_S):
                async with post(self._client, self._wire, payload, headers) as resp:
                    data = await read_json(resp, self._wire, "token count")
        except BackendError as error:
            if any(f"HTTP {status} " in str(error) for status in ABSENT):
                self._absent = True
            return None
        except TimeoutError:
            return None
        try:
            return token_count(data.get("count")) if isinstance(data, dict) else None
        except (TypeError, ValueError):  # a count that is not a number: none
            return None
