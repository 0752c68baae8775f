"""The simulators a config needs, read from its endpoints (``stackd sim demo --config FILE``).

Pure: ``fleet_for(config)`` looks at Ollama's URL (when some member runs on Ollama) and at every
remote member's endpoint, and returns one ``SimSpec`` per loopback host and port, of the kind its
``api`` speaks, listing the served models so that the simulator's model list names them. An
endpoint off loopback is never simulated (it may be a real provider): it is returned in
``skipped`` with the reason, as is a remote member whose protocol has no simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from stackd.config.models import Api, Runtime, StacksConfig
from stackd.errors import ConfigError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SIM_KIND = {Api.openai: "openai", Api.anthropic: "anthropic", Api.gemini: "gemini", Api.ollama: "ollama"}


@dataclass(frozen=True)
class SimSpec:
    """One simulator to run: its protocol, where it listens, and the members that use it."""

    kind: str
    host: str
    port: int
    members: tuple[str, ...]
    served_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fleet:
    sims: tuple[SimSpec, ...]
    skipped: tuple[str, ...]  # "member: why no simulator", one per endpoint left alone


def fleet_for(config: StacksConfig) -> Fleet:
    """The simulators ``config``'s Ollama and remote members point at, by port.

    Raises ``ConfigError`` when two members want different protocols on one port."""
    wanted: dict[tuple[str, int], tuple[str, list[str], list[str]]] = {}
    skipped: list[str] = []

    def want(kind: str, url: str, member: str, served: str | None) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host not in LOOPBACK_HOSTS:
            skipped.append(f"{member}: {url} is not a loopback address, so it is never simulated")
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = ("127.0.0.1" if host == "localhost" else host, port)
        have_kind, members, models = wanted.setdefault(key, (kind, [], []))
        if have_kind != kind:
            raise ConfigError(
                f"{member} speaks {kind} on port {port}, where {', '.join(members)} speaks "
                f"{have_kind}; one simulator serves one protocol: give one of them another port"
            )
        members.append(member)
        if served and served not in models:
            models.append(served)

    ollama_members = sorted(n for n, m in config.models.items() if m.runtime == Runtime.ollama)
    if ollama_members:
        want("ollama", config.ollama.url, "ollama.url", None)
    for name, model in sorted(config.models.items()):
        if model.runtime != Runtime.remote or model.endpoint is None:
            continue
        kind = SIM_KIND.get(model.api)
        if kind is None:
            skipped.append(f"{name}: no simulator speaks api {model.api.value}")
            continue
        want(kind, model.endpoint, name, model.served_model)
    sims = tuple(
        SimSpec(kind, host, port, tuple(members), tuple(models))
        for (host, port), (kind, members, models) in sorted(wanted.items(), key=lambda kv: kv[0][1])
    )
    return Fleet(sims, tuple(skipped))
