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
    ├── LeaseRefused               a model that cannot be leased in this stack (stackd.gpu.refusals)
    ├── LeaseUnavailable           a lease not served by its deadline (stackd.gpu.refusals, 503)
    ├── DriverUnavailable          an engine cannot be reached (Docker, Ollama, a remote)
    │   └── ProbeTimedOut          a health or remote probe got no answer within its bound
    ├── DriverFailed               an engine answered but refused the action (image missing, unhealthy)
    ├── NoSuchContainer            no container for a log (stackd.drivers.docker_logs, 404)
    ├── BackendFailed              a model backend failed a request (reason() attempts)
    │   └── AllStrategiesFailed    every strategy of the chain failed or was skipped
    │       └── OutputUnsupported  every target was skipped: none can honour response_format/tools (400)
    ├── InvalidSliceRequest        an unusable response_format or tool schema (slices.validators, 422)
    ├── WakeTimedOut               a call waited its bound for its stack to wake (stackd.manager.day)
    ├── WakeFailed                 the switch a call woke did not succeed (stackd.manager.day)
    ├── SeriesRefused              a usage window or bucket that cannot be cut (stackd.state.usage_series, 422)
    ├── Unauthorized               a request without the daemon's token or a valid key (stackd.api.auth, 401)
    ├── Forbidden                  a valid key without the route's scope (stackd.api.keyring, 403)
    ├── InvalidKey                 a key request with a bad name, scope or limit (stackd.api.keyring, 422)
    ├── RateLimited                a key over one of its limits, with ``retry_after_s`` (stackd.api.limits, 429)
    ├── BodyTooLarge               a request body past the route's limit (stackd.api.dispatch, 413)
    ├── TooManyConnections         a connection past the server's cap (stackd.api.http_server, 503)
    ├── RequestRejected            a gateway body that fails validation (stackd.api.raw_asgi, 422)
    ├── CallTimedOut               a tool call's ``timeout_s`` ran out (stackd.api.tools, 504)
    ├── UnknownTool                an MCP call of a tool that does not exist (stackd.api.mcp_server, 404)
    ├── NotRunning                 an MCP request outside the app's lifespan (stackd.api.mcp_server, 503)
    ├── NoEngineLog                a member without an engine log stackd can read (stackd.api.member_logs, 404)
    ├── DaemonUnreachable          the CLI cannot reach the daemon (stackd.cli.client)
    ├── DaemonError                the daemon answered with an error (stackd.cli.client)
    │   └── TokenRefused           the daemon answered 401 (stackd.cli.client)
    ├── DaemonStartFailed          the detached daemon exited before it served (stackd.cli.lifecycle)
    ├── NoDaemon                   no daemon runs for this state dir (stackd.cli.lifecycle)
    └── BadDuration                a duration the CLI cannot read, ``--expires`` (stackd.cli.key_commands)

Each class that lives beside its one raiser is defined there; the kinds several packages raise
are defined here.

Each kind declares its HTTP status (``status``); the API turns it into an answer in one place,
the error table of ``stackd.api.errors`` (headers, stackd's or OpenAI's shape); the CLI
catches ``StackdError`` once and prints ``Name: message``.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    def __init__(self, message: str, problems: Sequence[object] | None = None) -> None:
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


class ProbeTimedOut(DriverUnavailable):
    """No answer within the probe's bound: typed, because a single-slot engine busy with
    stackd's own request answers nothing else meanwhile ("busy", not "unhealthy")."""


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
