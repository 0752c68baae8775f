"""What a simulator is told to do: its fault mode and timings, changeable while it serves.

A test or a demo flips ``SimControl.fault`` (through ``SimServer.set_fault`` for ``refuse``,
which must close or reopen the listening socket) and the next request sees the new behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, TypedDict


class Fault(StrEnum):
    """How a simulator misbehaves. Each protocol renders a fault in its own wire format."""

    none = "none"
    refuse = "refuse"  # the port stops listening: new connections are refused
    http500 = "http500"  # 500 with the protocol's error body
    hang = "hang"  # the request is read and never answered (until ``hang_s`` or shutdown)
    slow_first_token = "slow_first_token"  # ``first_token_delay_ms`` before the first chunk or body
    die_mid_stream = "die_mid_stream"  # a few chunks (or half a body), then the connection is cut
    malformed_body = "malformed_body"  # 200 with truncated JSON; streams carry a garbage line
    pull_fails_halfway = "pull_fails_halfway"  # Ollama only: the pull stream ends with an error line
    # A careless upstream that quotes the credentials it was sent (``echo_of``), for redaction tests:
    echo_key_malformed = "echo_key_malformed"  # 200, broken JSON opening with the key; streams: a bad chunk
    echo_key_error_event = "echo_key_error_event"  # the protocol's error quoting the key, in a 200 or as
    # the stream's first event
    echo_key_long_error = "echo_key_long_error"  # 500 whose error body is over 300 bytes, the key
    # straddling byte 300 (where a snippet cut before redaction would split it)


class SimToolFunction(TypedDict):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class SimToolCall(TypedDict):
    """One OpenAI tool call a simulator answers with."""

    id: str
    type: str
    function: SimToolFunction


@dataclass
class SimControl:
    """Runtime knobs of a simulator. Mutable: the next request reads the current values."""

    fault: Fault = Fault.none
    latency_ms: float = 0.0  # added before every answer (not to /_sim)
    first_token_delay_ms: float = 1500.0  # slow_first_token: wait before the first chunk
    hang_s: float = 3600.0  # hang: how long a request stays unanswered
    answer: str = "Hello from the stackd simulator."
    tokens: int = 8  # completion tokens per answer; a stream sends this many content chunks
    chunk_interval_ms: float = 0.0  # pause between stream chunks
    require_api_key: str | None = None  # when set, requests without this key get the protocol's 401
    cut_after_chunks: int = 2  # die_mid_stream: chunks sent before the connection is cut
    # OpenAI tool calls ({"id", "type", "function": {"name", "arguments"}}) answered to a request
    # that offers tools (the OpenAI simulator; a stream sends each call's arguments in two pieces)
    tool_calls: list[SimToolCall] | None = None

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply ``changes`` (as sent to ``POST /_sim/fault``); unknown keys raise ``KeyError``."""
        for key, value in changes.items():
            if key not in self.__dataclass_fields__:
                raise KeyError(key)
            setattr(self, key, Fault(str(value)) if key == "fault" else value)


class RecordedRequest(NamedTuple):
    """One request a simulator received. Secret headers are replaced by ``"<redacted>"``."""

    method: str
    path: str
    body: object  # parsed JSON, or None for an empty or non-JSON body
    headers: dict[str, str]


SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie"})


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased headers with the values of credential headers replaced."""
    return {
        key.lower(): "<redacted>" if key.lower() in SECRET_HEADERS else value
        for key, value in headers.items()
    }


def echo_of(headers: Mapping[str, str], presented_key: str | None) -> str:
    """What an echoing upstream quotes: the key as the protocol carries it, and the raw
    ``Authorization`` header (which holds a URL's user:password as Basic credentials)."""
    return f"rejected credentials {presented_key or '-'} (authorization: {headers.get('Authorization', '-')})"


def split_answer(answer: str, tokens: int) -> list[str]:
    """Cut ``answer`` into ``tokens`` consecutive pieces (the stream's content chunks)."""
    count = max(1, tokens)
    step, extra = divmod(len(answer), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + step + (1 if index < extra else 0)
        pieces.append(answer[start:end])
        start = end
    return pieces


def count_prompt_tokens(text: str) -> int:
    """A cheap, deterministic token count: one token per whitespace-separated word, at least 1."""
    return max(1, len(text.split()))
