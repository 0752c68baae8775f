"""The restart policy of a ``runtime: process`` member (``process.restart``, ``restart_limit``,
``restart_backoff_s``): whether an engine that died on its own is started again, and when.
Pure; the member's watch task (``stackd.drivers.process``) applies it."""

from __future__ import annotations

from stackd.config.models import Model, ProcessRuntime, RestartPolicy

MAX_BACKOFF_S = 60.0
STABLE_AFTER_S = 60.0  # an engine up this long before it died starts a fresh restart count


def restart_runtime(wanted: bool, model: Model | None) -> ProcessRuntime | None:
    """The runtime to restart with, or None: not wanted, or no policy known (``model`` is None for
    an engine adopted and never observed since), or ``restart: never``."""
    if not wanted or model is None or model.process is None:
        return None
    return model.process if model.process.restart != RestartPolicy.never else None


def backoff_s(runtime: ProcessRuntime, restarts: int) -> float:
    """The wait before restart ``restarts + 1``: doubled at each, capped at ``MAX_BACKOFF_S``."""
    return min(MAX_BACKOFF_S, runtime.restart_backoff_s * 2.0**restarts)


def ran_stably(started_at: float, died_at: float) -> bool:
    """Whether an engine ran long enough that its death starts a fresh restart count."""
    return died_at - started_at > STABLE_AFTER_S
