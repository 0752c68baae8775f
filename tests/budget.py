"""How many examples a property test draws: all of them in the full run, a tenth under
``scripts/test --fast`` (STACKD_TEST_FAST=1), where a developer wants an answer in minutes."""

from __future__ import annotations

import os


def examples(full: int) -> int:
    return max(10, full // 10) if os.environ.get("STACKD_TEST_FAST") == "1" else full
