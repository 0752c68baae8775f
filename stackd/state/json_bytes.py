"""JSON to and from bytes on the data path, with orjson (C; 5 to 10 times the standard library's speed).

A gateway call encodes and decodes JSON four times (the engine's request and answer, the caller's
answer, the usage ledger's attempts): with ``json`` that was a tenth of the call's CPU
(docs/benchmarks.md). Output is compact UTF-8, as ``json.dumps(separators=(",", ":"),
ensure_ascii=False)`` writes it; a value orjson refuses (an int past 64 bits) falls back to the
standard library rather than failing a call.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS  # {1: …} as json.dumps writes it: {"1": …}


def dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: an int past 64 bits, a type it does not know
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(raw: bytes | str) -> Any:
    """What ``json.loads`` reads, and its errors (``ValueError``, ``RecursionError``): text orjson
    refuses is read again by the standard library, which also takes NaN and lone surrogates."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
