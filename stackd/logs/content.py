"""Prompts and completions in the log: never, unless ``Settings.log_content`` (``stackd serve
--log-content``, ``STACKD_LOG_CONTENT=1``) turns the ``stackd.content`` logger on.

The logger is off from import on (a level above CRITICAL), so a root logger set to DEBUG by
someone else still writes no prompt; only ``records.configure(log_content=True)`` lowers it. A
call that is not logged costs one cached level check.
"""

from __future__ import annotations

import logging
from typing import Any

CONTENT_LOGGER = "stackd.content"
OFF = logging.CRITICAL + 1

log = logging.getLogger(CONTENT_LOGGER)
log.setLevel(OFF)


def enable(on: bool) -> None:
    log.setLevel(logging.INFO if on else OFF)


def exchange(messages: list[dict[str, Any]], backend: str, answer: str) -> None:
    """One line with a call's prompt (its chat messages) and the answer's text."""
    if log.isEnabledFor(logging.INFO):
        log.info("prompt and answer (%s)", backend, extra={"messages": messages, "answer": answer})
