"""Counting a prompt with the engine's own tokenizer, for an engine whose stream reports no usage.

llama-cpp-python's server (0.3.x, what the embedded stacks run) ignores
``stream_options.include_usage``: its streamed chunks carry no ``usage``, so a streamed call
would otherwise cost "0 prompt tokens". It does expose its tokenizer at
``/extras/tokenize/count`` (next to ``/v1``, not under it). The count is of the messages' text
and roles, without the chat template's own tokens (the server applies the template, stackd
cannot see it), so the figure is an estimate, a little low, and is marked so.

An engine without that endpoint (404, 405) is remembered: its prompt count is then unknown
(``None``), never a made-up 0, and it is not asked again until the backend is rebuilt. A count
that fails for another reason (a timeout, a 500) is unknown for that call only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from stackd.router.backends.base import Wire, post, read_json, text_of, token_count
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


class PromptCounter:
    """Asks one engine how many tokens a prompt is. ``count`` never raises."""

    def __init__(self, endpoint: str, model: str, session: aiohttp.ClientSession, redact: Redactor) -> None:
        self._wire = Wire.to(f"{engine_root(endpoint)}{COUNT_PATH}", redact)
        self._model = model
        self._session = session
        self._absent = not endpoint  # no endpoint, nothing to ask

    async def count(self, messages: list[dict[str, Any]], headers: dict[str, str]) -> int | None:
        """The prompt's tokens by the engine's tokenizer, or None when it cannot say. ``headers``
        are the chat call's (its key: the tokenizer is behind the same door)."""
        if self._absent:
            return None
        payload = {"model": self._model, "input": prompt_text(messages)}
        try:
            async with asyncio.timeout(COUNT_TIMEOUT_S):
                async with post(self._session, self._wire, payload, headers) as resp:
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
