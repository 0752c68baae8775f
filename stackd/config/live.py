"""The config the daemon runs now: one ``LiveConfig`` that the manager, the router and the API read.

A reload (``POST /config/reload``, SIGHUP) swaps it once, on the manager's worker, between
switches: ``swap`` replaces ``current`` in one assignment and calls each ``on_swap`` listener (the
router rebuilds what the new file changes) before it returns, with no ``await`` in between, so no
request ever sees the manager on one file and the router on another. A reader takes ``current``
once per decision and works from that value: the config itself is frozen.
"""

from __future__ import annotations

from collections.abc import Callable

from stackd.config.models import StacksConfig

Listener = Callable[[StacksConfig, StacksConfig], None]  # (previous, new)


class LiveConfig:
    """The current ``StacksConfig``, and who follows its swaps."""

    __slots__ = ("_current", "_listeners")

    def __init__(self, config: StacksConfig) -> None:
        self._current = config
        self._listeners: list[Listener] = []

    @property
    def current(self) -> StacksConfig:
        return self._current

    def on_swap(self, listener: Listener) -> None:
        """Call ``listener(previous, new)`` at each swap, synchronously, in the order registered."""
        self._listeners.append(listener)

    def swap(self, config: StacksConfig) -> StacksConfig:
        """Adopt ``config``; returns the previous one. The caller is the one writer (the manager's
        worker, ``ModelStackManager.replace_config``); a listener must not await."""
        previous, self._current = self._current, config
        for listener in self._listeners:
            listener(previous, config)
        return previous


def live(config: StacksConfig | LiveConfig) -> LiveConfig:
    """``config`` itself when it is live already; else a ``LiveConfig`` of its own (a part built
    alone, in a test or a CLI command, holds one nobody else reads)."""
    return config if isinstance(config, LiveConfig) else LiveConfig(config)
