"""The keys the daemon accepts, in memory: one dict lookup a request, no database read.

``Keyring`` holds every live key by the SHA-256 of its text (``stackd.state.keys`` says why a
plain digest is enough), plus the state dir's bootstrap token (every scope) and the config's
gateway token (``auth.gateway_token_env``: scope ``gateway``). ``create``, ``revoke`` and
``rotate`` write the table first and then swap the dict, so the very next request sees the
change, without a restart or a reload; the daemon is the only writer of the table (the CLI asks
it over HTTP).

A key's text is shown once, by ``create`` or ``rotate``; nothing keeps it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from stackd.api.auth import TOKEN_ENV, TOKEN_FILE, Unauthorized
from stackd.api.scopes import ALL_SCOPES, Scope
from stackd.errors import Conflict, NotFound, StackdError
from stackd.state.keys import KeyRecord, KeyStore

BOOTSTRAP = "bootstrap"  # the state dir's token: every scope
GATEWAY_TOKEN = "gateway-token"  # the config's auth.gateway_token_env
KEY_PREFIX = "sk-stackd-"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
RESERVED = frozenset({BOOTSTRAP, GATEWAY_TOKEN, "anonymous"})


class Forbidden(StackdError):
    """A valid key without the scope a route needs (403). Names the scope, nothing about other keys."""

    status = 403


class InvalidKey(StackdError):
    """A key request that cannot be honoured (a bad name, scope or limit): 422."""

    status = 422


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request is: a key's name and what it may do. ``record`` is None for the bootstrap
    and gateway tokens and for the anonymous caller of an open route."""

    name: str
    scopes: frozenset[str]
    models: tuple[str, ...] = ()
    record: KeyRecord | None = None
    digest: str = ""

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models


ANONYMOUS = Caller("anonymous", frozenset())


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What ``stackd keys create`` asks for."""

    name: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] = ()
    rpm: int | None = None
    daily_tokens: int | None = None
    daily_cost_usd: float | None = None
    expires_in_s: float | None = None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(header: bytes | None) -> str | None:
    """The token of ``Authorization: Bearer TOKEN`` (the scheme in any case, RFC 9110); None for
    anything else: no header, another scheme (Basic), an empty token. A token in the query
    string is never read: it would land in proxies' and shells' histories."""
    if not header:
        return None
    scheme, _, token = header.decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthorized() -> Unauthorized:
    # The same words for every failure: no hint whether a key exists, expired or was revoked.
    return Unauthorized(
        "missing or wrong bearer token; send 'Authorization: Bearer TOKEN' (a key from "
        f"'stackd keys create', or the daemon's token: ${TOKEN_ENV} or the state dir's '{TOKEN_FILE}' file)"
    )


class Keyring:
    def __init__(
        self,
        store: KeyStore | None,
        bootstrap_token: str,
        clock: Callable[[], float],
        gateway_token: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        boot = digest(bootstrap_token)
        self._fixed: dict[str, Caller] = {boot: Caller(BOOTSTRAP, frozenset(ALL_SCOPES), digest=boot)}
        if gateway_token:
            gate = digest(gateway_token)
            self._fixed[gate] = Caller(GATEWAY_TOKEN, frozenset({Scope.GATEWAY}), digest=gate)
        self._records: dict[str, KeyRecord] = {}
        self._by_digest: dict[str, Caller] = {}
        self._load(store.all() if store is not None else ())

    def _load(self, records: Iterable[KeyRecord]) -> None:
        self._records = {r.name: r for r in records}
        live = {
            r.digest: Caller(r.name, frozenset(r.scopes), r.models, r, r.digest)
            for r in self._records.values()
            if r.revoked is None
        }
        self._by_digest = {**live, **self._fixed}  # one swap: a request sees the old or the new

    def authenticate(self, header: bytes | None) -> Caller:
        """The caller whose token ``header`` carries; ``Unauthorized`` otherwise."""
        token = bearer(header)
        if token is None:
            raise unauthorized()
        wanted = digest(token)
        caller = self._by_digest.get(wanted)
        # The dict is keyed by the digest, and a caller cannot steer a digest's bytes, so the lookup's
        # time says nothing about any key; the compare below is constant-time all the same.
        if caller is None or not hmac.compare_digest(wanted, caller.digest):
            raise unauthorized()
        record = caller.record
        if record is not None and record.expires is not None and record.expires <= self._clock():
            raise unauthorized()
        return caller

    def records(self) -> list[KeyRecord]:
        return sorted(self._records.values(), key=lambda r: r.name)

    def names(self) -> list[str]:
        return [BOOTSTRAP, *(r.name for r in self.records() if r.revoked is None)]

    def create(self, spec: KeySpec) -> tuple[KeyRecord, str]:
        """A new key: its record and its text (shown once)."""
        check_spec(spec)
        if spec.name in self._records:
            raise Conflict(
                f"a key named '{spec.name}' exists; pick another name, or 'stackd keys rotate {spec.name}'"
            )
        text = KEY_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        record = KeyRecord(
            name=spec.name,
            digest=digest(text),
            scopes=tuple(sorted(set(spec.scopes))),
            models=tuple(spec.models),
            rpm=spec.rpm,
            daily_tokens=spec.daily_tokens,
            daily_cost_usd=spec.daily_cost_usd,
            created=now,
            expires=None if spec.expires_in_s is None else now + spec.expires_in_s,
        )
        self._save(record)
        return record, text

    def revoke(self, name: str) -> KeyRecord:
        record = replace(self._live(name), revoked=self._clock())
        self._save(record)
        return record

    def rotate(self, name: str) -> tuple[KeyRecord, str]:
        """A new text for the key ``name`` (same scopes and limits); the old text stops working now."""
        text = KEY_PREFIX + secrets.token_urlsafe(32)
        record = replace(self._live(name), digest=digest(text))
        self._save(record)
        return record, text

    def _live(self, name: str) -> KeyRecord:
        record = self._records.get(name)
        if record is None or record.revoked is not None:
            raise NotFound(f"no live key named '{name}'; 'stackd keys list' shows them", name=name)
        return record

    def _save(self, record: KeyRecord) -> None:
        if self._store is None:
            raise InvalidKey("this daemon keeps no key table")
        self._store.put(record)  # the table first: a key is never live in memory only
        self._load([*(r for r in self._records.values() if r.name != record.name), record])


def check_spec(spec: KeySpec) -> None:
    if not NAME.match(spec.name) or spec.name in RESERVED:
        raise InvalidKey(
            f"key name '{spec.name}' is not allowed: 1-40 of a-z 0-9 . _ -, starting with a letter or "
            f"digit, not one of {', '.join(sorted(RESERVED))}",
            field="name",
        )
    unknown = sorted(set(spec.scopes) - {s.value for s in Scope})
    if not spec.scopes or unknown:
        raise InvalidKey(
            f"scopes must be some of {', '.join(s.value for s in Scope)}; got {', '.join(unknown) or 'none'}",
            field="scopes",
        )
    for field, value in (("rpm", spec.rpm), ("daily_tokens", spec.daily_tokens)):
        if value is not None and value < 1:
            raise InvalidKey(f"{field} must be at least 1 (leave it out for no limit)", field=field)
    if spec.daily_cost_usd is not None and not spec.daily_cost_usd > 0:
        raise InvalidKey("daily_cost_usd must be above 0 (leave it out for no limit)", field="daily_cost_usd")
    if spec.expires_in_s is not None and not spec.expires_in_s > 0:
        raise InvalidKey("expires must be in the future", field="expires")
