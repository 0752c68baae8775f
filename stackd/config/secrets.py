"""Where the API keys of remote members come from: ``Secrets``, injected, never ``os.environ``
read in place.

A remote member names its key's variable (``remote.api_key_env``); the prober
(``stackd.drivers.remote``), the router's backends and the redaction of every log line and error
(``stackd.router.redaction``) ask the daemon's one ``Secrets`` for its value. In production it is
the process's environment (``Secrets.environment()``, read at each call, so a value is never
copied into another object); a test gives a dict, so it sets no process-wide variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from stackd.config.models import Model


class Secrets:
    """Values of the variables that hold API keys; an unset or empty one is None."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    @classmethod
    def environment(cls) -> Secrets:
        """The daemon's environment, read at each lookup (not a copy)."""
        return cls(os.environ)

    def get(self, name: str | None) -> str | None:
        """The value of variable ``name``; None when ``name`` is None or the variable unset or empty."""
        return (self._values.get(name) or None) if name else None

    def api_key(self, model: Model) -> str | None:
        """``model``'s key: the value of its ``remote.api_key_env``; None when it names none."""
        return self.get(model.remote.api_key_env if model.remote else None)
