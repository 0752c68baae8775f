"""The shared field types and value checks of the config models (``models``, ``runtimes``, ``reason``).

Value checks raise "what is wrong; how to fix it" and never quote the value: it may have come
from the environment, and the loader adds it to the message only when it did not.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MIB_PER_GIB = 1024

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._:-]*$", max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]

# Every duration has an upper bound as well as a lower one. asyncio waits as long as it is told,
# so ``total_s: 1e300`` (or ``.inf``, or milliseconds written where seconds belong) meant that
# no call ever timed out and a dead engine held its caller forever; a bound refuses the typo at
# its line instead. A day is the longest any wait of stackd is meant to last: a cold start that
# downloads weights takes hours, never days. Shorter bounds below say why they are shorter.
SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3_600

# Value checks raise "what is wrong; how to fix it" and never quote the value: it may have
# come from the environment, and the loader adds it to the message only when it did not.
_URL_FIX = "write http://HOST:PORT/PATH, e.g. http://127.0.0.1:8120/v1"
_PORT_RANGE = "the URL's port is out of range; use a port between 1 and 65535"
_MACRO = re.compile(r"\$\{([A-Z_]+)\}")
# Macros of a process member's command, env and endpoint, filled in at each start (never read
# from the environment): the port stackd picked, stackd's own interpreter (its venv has the
# engines of ``stackd[local]``), the file ``model_package`` assembled, the state dir.
PROCESS_MACROS = frozenset({"PORT", "PYTHON", "MODEL_PATH", "STATE_DIR"})

_CONTAINER_PORT = re.compile(r"(\d{1,5})(?:/(?:tcp|udp|sctp))?")


def check_url(url: str, macros: frozenset[str] = frozenset()) -> str:
    """``url`` if an HTTP client can call it: http or https, a host, a port in 1-65535.

    ``macros`` are ``${NAME}`` references filled in later (a process member's ``${PORT}``).
    """
    text = _MACRO.sub(lambda m: "1" if m.group(1) in macros else m.group(0), url)
    if left := [name for name in _MACRO.findall(text) if name in PROCESS_MACROS]:
        raise ValueError(f"${{{left[0]}}} is filled in for process models only; write the value itself")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        if "range" in str(exc):
            raise ValueError(_PORT_RANGE) from None
        what = "port is not a number" if "port" in str(exc).lower() else "host is not valid"
        raise ValueError(f"the URL's {what}; {_URL_FIX}") from None
    if not parts.scheme and not parts.netloc:
        if text and not any(c.isspace() for c in text) and ("." in text or ":" in text):
            raise ValueError("the URL has no scheme; write http:// or https:// before the host")
        raise ValueError(f"is not a URL; {_URL_FIX}")
    if parts.scheme not in ("http", "https"):
        slashes = "" if parts.netloc else ", and '//' comes before the host"
        raise ValueError(f"the URL's scheme must be http or https{slashes}; {_URL_FIX}")
    if not parts.hostname:
        raise ValueError(
            "the URL has no host; write '//' and the host after the scheme, e.g. http://127.0.0.1:8120/v1"
        )
    if any(c.isspace() for c in text):
        raise ValueError("a URL has no spaces; remove them, or write %20 where a space belongs in the path")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(_PORT_RANGE)
    return url


def _check_container_port(key: str) -> str:
    match = _CONTAINER_PORT.fullmatch(key)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise ValueError(
            "is not a container port; write PORT or PORT/tcp (udp, sctp) with PORT between 1 and 65535, "
            'e.g. "8000/tcp"'
        )
    return key


ContainerPort = Annotated[str, AfterValidator(_check_container_port)]


class Frozen(BaseModel):
    """Base of every config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
