"""The status page's notices, grouped: pure, no I/O.

``/status`` says some things many times over: four cloud members without a key are four
degraded entries (and four states, and four failed probes); a first start tells its whole story
of stacks that could not run. The page shows each kind once, as a group with a one-line
``title`` and its ``lines`` folded under it:

    keys      the cloud members without an API key, as ONE line naming the variables to set
    degraded  every other degraded member, with its error
    drift     what runs and should not, or should run and does not
    recovery  what the daemon did at its start (the first-start story); its ``id`` is stable per
              start, so that the page folds it for good once it was read (localStorage)
    engines   Docker or Ollama that cannot be reached, when the active stack uses them or not

Drift is held back while a switch runs and for ``DRIFT_GRACE_S`` after one ends: mid-switch the
new stack's engine runs before the stack is active (it is "running but not a member"), and an
observation taken just before the switch's end can still see the old stack's engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from stackd.api.page_members import missing_key

DRIFT_GRACE_S = 5.0
_STORY_BREAK = re.compile(r"; (?='[^']+' could not run)|; (?=so stackd )")


def drift_held(status: Mapping[str, Any], now: float) -> bool:
    """True while a switch runs or just ended (see the module's docstring)."""
    if status.get("switch_in_progress"):
        return True
    finished = (status.get("last_switch") or {}).get("finished_at")
    return isinstance(finished, int | float) and now - finished < DRIFT_GRACE_S


class Notice(TypedDict):
    """One group of the page's notices: ``id`` stays the same while its cause does."""

    id: str
    kind: str
    title: str
    lines: list[str]


def notices(status: Mapping[str, Any], now: float) -> list[Notice]:
    """The groups of the module's docstring, in that order, each only when it has a line."""
    out = degraded_notices(status.get("degraded") or ())
    drift = list(status.get("drift") or ())
    if drift and not drift_held(status, now):
        out.append(
            {"id": "drift", "kind": "drift", "title": f"drift: {drift[0]}" + _more(drift), "lines": drift}
        )
    story = status.get("recovery")
    if story:
        out.append(recovery_notice(story, status.get("recovery_detail") or {}))
    engines = [f"{name}: {why}" for name, why in (status.get("engines") or {}).items() if why != "ok"]
    if engines:
        names = " and ".join(line.split(":")[0].capitalize() for line in engines)
        out.append({"id": "engines", "kind": "engines", "title": f"{names}: not reachable", "lines": engines})
    return out


def degraded_notices(degraded: Iterable[Mapping[str, Any]]) -> list[Notice]:
    """Cloud members without their API key (one group, by variable), then the other degraded."""
    out: list[Notice] = []
    keys: dict[str, list[str]] = {}
    others: list[str] = []
    for entry in degraded:
        variable = missing_key(entry.get("error"))
        if variable is not None:
            keys.setdefault(variable, []).append(entry["model"])
        else:
            others.append(f"{entry['model']}: {entry.get('error')}")
    if keys:
        members = sum(len(names) for names in keys.values())
        out.append(
            {
                "id": "keys",
                "kind": "keys",
                "title": f"{members} cloud member{'s' * (members != 1)} without an API key: "
                f"set {', '.join(sorted(keys))}",
                "lines": [f"{variable}: {', '.join(names)}" for variable, names in sorted(keys.items())],
            }
        )
    if others:
        out.append(
            {
                "id": "degraded",
                "kind": "degraded",
                "title": f"degraded: {others[0]}" + _more(others),
                "lines": others,
            }
        )
    return out


def recovery_notice(story: str, detail: Mapping[str, object]) -> Notice:
    """The start's recovery story: its outcome as the title, its steps as the lines."""
    parts = _STORY_BREAK.split(story)
    head = story.split(":")[0]  # "first start", "restart" …
    outcome = parts[-1].removeprefix("so ")
    return {
        "id": f"recovery:{detail.get('switch_id') or story[:40]}",
        "kind": "recovery",
        "title": outcome if outcome.startswith(head) else f"{head}: {outcome}",
        "lines": parts if len(parts) > 1 else [],
    }


def _more(lines: list[str]) -> str:
    return f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
