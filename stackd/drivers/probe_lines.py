"""Which lines of an engine's log are stackd's own health probes, answered.

An engine logs every ``GET /v1/models`` (``/health``, ``/api/tags`` …) stackd sends to check it,
one every ``health.interval_s``: on a quiet engine they are nearly all of its log and say nothing.
Every tail stackd shows of an engine's log drops them (``stackd status``, the status page's
cards, ``stackd logs``, the last lines quoted when an engine fails), through this one predicate.
A probe that failed (503, 500) stays: it is news.

Matched forms: uvicorn's access line (llama-cpp-python, vLLM: ``"GET /v1/models HTTP/1.1" 200
OK``), llama.cpp's server (``GET /v1/models 127.0.0.1 200``), Ollama's gin (``| 200 | … | GET
"/api/tags"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PROBE_PATHS = r'"?(?:/v1/models|/models|/health\w*|/api/tags|/api/ps|/api/version)\b'
PROBE_LINE = re.compile(rf"GET\s+{PROBE_PATHS}.*\b200\b|\b200\b.*GET\s+{PROBE_PATHS}")


def is_probe_line(line: str) -> bool:
    """The line is a health probe's request the engine answered with 200."""
    return PROBE_LINE.search(line) is not None


def without_probes(lines: Iterable[str], keep: int | None = None) -> list[str]:
    """The non-blank lines that are not an answered health probe; the last ``keep`` of them
    when given."""
    kept = [line for line in lines if line.strip() and not is_probe_line(line)]
    return kept if keep is None else kept[-keep:] if keep > 0 else []
