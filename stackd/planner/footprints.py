"""Declared and measured sizes of GPU members: what the planner and the lease coordinator budget.

A member is budgeted at the largest of its declaration (``memory_gb``), what it holds now
(``ObservedState.measured_mib``) and the largest it was ever measured to hold under the same
engine config (``ObservedState.footprint_mib``, from the state store). The digest that keys a
remembered footprint covers what decides an engine's memory (runtime, placement and the runtime
section: image, command, arguments, environment); a change there forgets the old measurement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from stackd.config.models import Model, StacksConfig
from stackd.planner.plan import ObservedState

_DIGEST_FIELDS = {"runtime", "placement", "docker", "process", "ollama"}


def footprint_digest(model: Model) -> str:
    """A short digest of the parts of ``model`` that decide how much memory its engine takes."""
    payload = model.model_dump(mode="json", include=_DIGEST_FIELDS)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def remembered_footprints(config: StacksConfig, rows: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """model -> remembered MiB, for the models whose current config has a measurement."""
    out: dict[str, int] = {}
    for name, model in config.models.items():
        mib = rows.get((name, footprint_digest(model)))
        if mib is not None:
            out[name] = mib
    return out


def measured_of(name: str, observed: ObservedState) -> int | None:
    """The larger of what ``name`` holds now and what it was measured to hold before, if known."""
    figures = [
        m for m in (observed.measured_mib.get(name), observed.footprint_mib.get(name)) if m is not None
    ]
    return max(figures) if figures else None


def budget_mib(name: str, model: Model, observed: ObservedState) -> int:
    """What the ledgers count for ``name``: its declaration, or more when measured larger."""
    return max(model.memory_mib, measured_of(name, observed) or 0)
