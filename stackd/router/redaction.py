"""Secrets never leave through the text of a failure: redaction at the one place upstream text enters.

An upstream may echo what it was sent: the key in an error body, in a malformed stream chunk, in
an error event; an endpoint may carry credentials in its URL (``https://user:KEY@host``). Every
piece of upstream text that stackd keeps (the snippet of an error body, a bad chunk, an aiohttp
message naming the peer's bytes) goes through ``Redactor.snippet`` exactly once, in
``backends/base.py``, *before* it is cut to length: a key that straddles the cut can never leave
half of itself behind. Everything downstream (``BackendError``, attempts, the circuit's
``last:`` reason, the 503's message, logs, SQLite) only ever sees the redacted text.

What is redacted:

- the value of every ``api_key_env`` of the config (read from the environment at each use, so a
  rotated key is redacted too), raw, percent-encoded and JSON-escaped;
- the password of every endpoint's URL userinfo (and the user when it is the only credential,
  ``https://TOKEN@host``), and the Basic credentials made of it;
- ``Bearer <anything>``, ``Basic <base64>`` and the userinfo of any URL in the text, whatever
  it holds.

Answers are not redacted: a model's text is the caller's, and scanning it would cost every
token of the hot path.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from stackd.config.models import StacksConfig
from stackd.config.secrets import Secrets

REDACTED = "***"
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;}\]]+")
# base64 of user:password; a digit, '+', '/' or '=' tells it from an English word ("basic auth")
_BASIC = re.compile(r"(?i)\b(basic)\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{4,}=*")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@\"'<>]*@")


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``(url without userinfo, userinfo or None)``. Textual, so it never raises on a bad URL;
    the last ``@`` of the authority ends the userinfo, as browsers and urllib read it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, None
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    end = min(ends, default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at:
        return url, None
    return f"{scheme}://{host}{rest[end:]}", userinfo


def userinfo_secrets(userinfo: str) -> list[str]:
    """What of a URL's userinfo is secret: the password (raw and decoded) and the whole userinfo;
    the user alone only when there is no password (``https://TOKEN@host``)."""
    user, colon, password = userinfo.partition(":")
    parts = [userinfo, password, unquote(password)] if colon else [user, unquote(user)]
    basic = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return [p for p in [*parts, basic] if p]


@dataclass(frozen=True, slots=True)
class Redactor:
    """Replaces the secrets it knows of, ``Bearer …`` and URL userinfo with ``***``.

    ``key_envs`` are variables whose values are secrets, looked up in ``keys`` (the daemon's
    ``Secrets``) at each call; ``literals`` are secrets known from the config itself (URL
    credentials). The backends read their own key through the same ``keys``."""

    key_envs: tuple[str, ...] = ()
    literals: tuple[str, ...] = ()
    keys: Secrets = field(default_factory=Secrets.environment)

    @classmethod
    def for_config(cls, config: StacksConfig, keys: Secrets | None = None) -> Redactor:
        """Every key variable and every endpoint credential of ``config``, whichever model fails:
        an upstream may echo another model's key when two share a proxy."""
        envs: set[str] = set()
        literals: set[str] = set()
        urls = [config.ollama.url]
        for model in config.models.values():
            if model.remote is not None and model.remote.api_key_env:
                envs.add(model.remote.api_key_env)
            if model.endpoint:
                urls.append(model.endpoint)
        for url in urls:
            _, userinfo = split_userinfo(url)
            if userinfo:
                literals.update(userinfo_secrets(userinfo))
        return cls(tuple(sorted(envs)), tuple(sorted(literals)), keys or Secrets.environment())

    def with_literals(self, extra: Iterable[str]) -> Redactor:
        return Redactor(self.key_envs, tuple(sorted({*self.literals, *extra})), self.keys)

    def secrets(self) -> list[str]:
        """The secrets' current forms, longest first (a key containing another is replaced whole)."""
        values = {*self.literals, *(self.keys.get(env) or "" for env in self.key_envs)}
        forms = {
            form
            for value in values
            if value
            for form in (value, quote(value, safe=""), json.dumps(value)[1:-1])
        }
        return sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        # the patterns first: a short secret replaced inside a token would hide the token from them
        text = _BEARER.sub(rf"\1 {REDACTED}", text)
        text = _BASIC.sub(rf"\1 {REDACTED}", text)
        text = _URL_USERINFO.sub(r"\1", text)
        for secret in self.secrets():
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def snippet(self, raw: bytes | str, limit: int) -> str:
        """Upstream bytes as text a person can read: decoded, redacted, *then* cut to ``limit``."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        text = self(text.strip())
        return text if len(text) <= limit else f"{text[:limit]}…"
