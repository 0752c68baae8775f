"""The error tree of stackd.

Every failure a person can act on is one of these; foreign exceptions (docker, ollama,
NVML, HTTP clients) are translated at the driver boundary with ``raise ... from exc``.

    StackdError                    root; ``str(err)`` is a sentence a person can act on
    ├── ConfigError                a config file is invalid (carries ``problems``)
    ├── NotFound                   unknown stack, role, model, preset or switch id
    ├── Conflict                   another switch is in progress, or another daemon in the way
    │   ├── StateDirLocked         another daemon holds the state dir (stackd.state.lock)
    │   └── PortInUse              another process listens on the port (stackd.api.listener)
    ├── CannotListen               the daemon's host:port cannot be bound (stackd.api.listener)
    ├── UnsafeBind                 a bind beyond loopback without a token (stackd.daemon)
    ├── PlanRefused                the target stack does not fit (carries the plan)
    ├── LeaseRefused               a model that cannot be leased in this stack (stackd.gpu.leases)
    ├── DriverUnavailable          an engine cannot be reached (Docker, Ollama, a remote)
    ├── DriverFailed               an engine answered but refused the action (image missing, unhealthy)
    ├── BackendFailed              a model backend failed a request (reason() attempts)
    │   └── AllStrategiesFailed    every strategy of the chain failed or was skipped
    │       └── OutputUnsupported  every target was skipped: none can honour response_format/tools (400)
    ├── Unauthorized               a request without the daemon's token (stackd.api.auth, 401)
    ├── BodyTooLarge               a request body past the route's limit (stackd.api.dispatch, 413)
    ├── RequestRejected            a gateway body that fails validation (stackd.api.gateway, 422)
    ├── CallTimedOut               a tool call's ``timeout_s`` ran out (stackd.api.tools, 504)
    └── the CLI's own (stackd.cli): DaemonUnreachable, DaemonError (└── TokenRefused),
        DaemonStartFailed, NoDaemon

Each class that lives beside its one raiser is defined there; the kinds several packages raise
are defined here.

The API maps each kind to one HTTP status in one place (``stackd.api.errors``); the CLI
catches ``StackdError`` once and prints ``Name: message``.
"""

from __future__ import annotations

from typing import Any


class StackdError(Exception):
    """Root of stackd's errors. ``status`` is the HTTP status the API answers with."""

    status: int = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, **self.detail}


class ConfigError(StackdError):
    """A config file failed to load. ``problems`` holds one ``Problem`` per error."""

    status = 422

    def __init__(self, message: str, problems: list[Any] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": "ConfigError",
            "message": self.message,
            "problems": [str(p) for p in self.problems],
        }


class NotFound(StackdError):
    status = 404


class Conflict(StackdError):
    status = 409


class PlanRefused(StackdError):
    status = 422


class DriverUnavailable(StackdError):
    status = 503


class DriverFailed(StackdError):
    status = 502


class BackendFailed(StackdError):
    status = 502


class AllStrategiesFailed(BackendFailed):
    status = 503


class OutputUnsupported(AllStrategiesFailed):
    """Every target of the route was skipped because none can honour the request's
    ``response_format`` or ``tools``: the request asks for what this route cannot give (400, as
    OpenAI answers an unsupported parameter; retrying cannot help, unlike a 503)."""

    status = 400
