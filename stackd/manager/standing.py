"""What of a stack serves at the moment a switch answers, and the words that say it.

A switch's last sentence used to be what the undo meant to achieve ("'gamma' is running as
before"), not what was true: on a Swarm cluster a member whose node died during the switch stayed
degraded while the sentence said the stack ran. So before it answers, the executor probes the
members it speaks of (``read_standing``) and the words name which answer and which do not, with
the probe's reason (``rollback_words``, ``commit_words``).

A member is probed through the manager's ``HealthChecker``: for a Swarm member that is its task
read from Swarm (a node down, a task pending) and then its endpoint over HTTP; for a local one
its endpoint. Remote members are not probed here: a call to a cloud API costs money, and their
switch-time probe (``ProbeRemote``) already says whether they answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from stackd.config.models import Lifecycle, Model, Runtime
from stackd.drivers.base import HealthChecker
from stackd.errors import StackdError

Standing = Mapping[str, str | None]  # member -> None when it answers, else why it does not
PROBE_GRACE_S = 1.0  # on top of the member's health.timeout_s; the checker times out first
DEFAULT_PROBE_S = 5.0


async def read_standing(health: HealthChecker, models: Mapping[str, Model], names: Iterable[str]) -> Standing:
    """Probe ``names`` at once, each bounded by its health timeout. Remote members are left out,
    and on-demand ones: a switch does not start them, so not running is what they should do."""
    probed = sorted(
        n
        for n in set(names)
        if n in models and models[n].runtime != Runtime.remote and models[n].lifecycle != Lifecycle.on_demand
    )
    errors = await asyncio.gather(*(_probe(health, name, models[name]) for name in probed))
    return dict(zip(probed, errors, strict=True))


async def _probe(health: HealthChecker, name: str, model: Model) -> str | None:
    limit = (model.health.timeout_s if model.health else DEFAULT_PROBE_S) + PROBE_GRACE_S
    try:
        async with asyncio.timeout(limit):
            await health.check(name, model)
    except TimeoutError:
        return f"no answer to its health probe within {limit:g} s"
    except StackdError as exc:
        return exc.message
    except Exception as exc:  # a probe that breaks says nothing true of the member: say so
        return f"its probe failed: {type(exc).__name__}: {exc}"
    return None


def rollback_words(stack: str, standing: Standing) -> str:
    """The clause after an undo that put ``stack`` back: 'running as before' only when every
    probed member answers; otherwise which do not, and why."""
    answering, degraded = _split(standing)
    if not degraded:
        names = f" ({_names(answering)} {_verb(answering)})" if answering else ""
        return f"'{stack}' is running as before{names}"
    return f"'{stack}' is back but degraded: {_degraded(degraded)}" + _answering(answering)


def commit_words(stack: str, standing: Standing) -> str:
    """A note for a switch that committed ``stack`` with members that do not answer ('' if none)."""
    answering, degraded = _split(standing)
    if not degraded:
        return ""
    return f"'{stack}' is active but degraded: {_degraded(degraded)}" + _answering(answering)


def degraded_words(standing: Standing) -> str:
    """'; emb-3 is degraded (…)' for a sentence that says some steps could not be undone."""
    _, degraded = _split(standing)
    return f"; {_degraded(degraded)}" if degraded else ""


def _split(standing: Standing) -> tuple[list[str], dict[str, str]]:
    answering = sorted(n for n, why in standing.items() if why is None)
    degraded = {n: why for n, why in sorted(standing.items()) if why is not None}
    return answering, degraded


def _degraded(degraded: Mapping[str, str]) -> str:
    return ", ".join(f"{name} is degraded ({why})" for name, why in degraded.items())


def _answering(answering: list[str]) -> str:
    return f"; {_names(answering)} {_verb(answering)}" if answering else "; no member of it answers"


def _names(names: list[str]) -> str:
    return ", ".join(names)


def _verb(names: list[str]) -> str:
    return "answers" if len(names) == 1 else "answer"
