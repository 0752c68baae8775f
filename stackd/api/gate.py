"""The front door's decision for each request: who is calling, may they, and the audit of it.

``Gate.admit`` reads only the request's line and headers (never its body), so a refusal costs
the same whatever the body: the route's rule in ``stackd.api.scopes`` → open, or the caller's
key (``Keyring``: 401 when none is valid) → its scope (403 naming the scope needed) → its
limits (``KeyMeter``: 429 with ``Retry-After``). On the data path a key limited to named models
has its body's model checked too (``model_of``), before the endpoint sees it.

``Gate.audit`` writes one row for each control action (a non-GET operator or admin route) that
a key asked for, with the answer's status, after the answer is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from starlette.types import Scope as AsgiScope

from stackd.api.keyring import ANONYMOUS, Caller, Forbidden, Keyring
from stackd.api.limits import KeyMeter
from stackd.api.scopes import RouteTable, Rule, Scope
from stackd.logs.request_id import SCOPE_KEY
from stackd.state.audit import AuditEntry, AuditLog

log = logging.getLogger("stackd.api")

BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CONTROL = frozenset({Scope.OPERATOR, Scope.ADMIN})
# Where a data-path call names its model (a key may be limited to some).
MODEL_FIELDS = {"/v1/chat/completions": "model", "/tools/invoke_model": "preset"}
FIXED_MODELS = {"/tools/reason": "reason", "/tools/deep_reasoning": "deep_reasoning"}
TARGET_FIELDS = ("stack", "model", "name", "lease_id", "preset")


def authorization(scope: AsgiScope) -> bytes | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            return value  # type: ignore[no-any-return]
    return None


def needs_scope(scope: Scope) -> Forbidden:
    return Forbidden(
        f"this needs a key with scope '{scope}'; this key does not have it", needed_scope=str(scope)
    )


class Gate:
    def __init__(
        self,
        keyring: Keyring,
        loopback: bool,
        meter: KeyMeter | None = None,
        audit_log: AuditLog | None = None,
        claim: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        table: RouteTable | None = None,
    ) -> None:
        self.keyring = keyring
        self.meter = meter
        self._loopback = loopback
        self._audit_log = audit_log
        self._claim = claim  # the usage ledger's: this call's tokens are this key's
        self._clock = clock
        self.table = table or RouteTable()  # public: a test widens it to see the matrix fail

    def admit(self, scope: AsgiScope) -> tuple[Caller, Rule | None]:
        """The caller, and the rule that admitted it; raises Unauthorized, Forbidden or RateLimited."""
        method = scope["method"]
        rule = self.table.rule(method, scope["path"])
        if rule is None:
            # No rule: no such route (FastAPI answers 404 or 405), or one added without a rule,
            # which is then closed by default: a method that may carry a body needs ``admin``
            # (and no body is read for a stranger), a read off loopback needs ``read``.
            if method in BODYLESS and self._loopback:
                return ANONYMOUS, None
            caller = self.keyring.authenticate(authorization(scope))
            needed = Scope.READ if method in BODYLESS else Scope.ADMIN
            if needed not in caller.scopes:
                raise needs_scope(needed)
            return caller, None
        if (rule.scope is None and not rule.any_key) or (rule.loopback_open and self._loopback):
            return ANONYMOUS, rule
        caller = self.keyring.authenticate(authorization(scope))
        if rule.scope is not None and rule.scope not in caller.scopes:
            raise needs_scope(rule.scope)
        data_path = rule.scope is Scope.GATEWAY or rule.any_key
        if self.meter is not None:
            self.meter.admit(caller, data_path)
        if data_path and self._claim is not None:
            request_id = scope.get(SCOPE_KEY)
            if request_id:
                self._claim(request_id, caller.name)
        return caller, rule

    def allowed_model(self, caller: Caller, path: str, body: bytes) -> None:
        """Forbidden unless ``caller`` may use the model this data-path call names."""
        model = model_of(path, body)
        if model is not None and not caller.may_use(model):
            raise Forbidden(
                f"this key may not use '{model}'; it may use {', '.join(caller.models)}",
                needed_model=model,
            )

    def is_control(self, rule: Rule | None, method: str) -> bool:
        return rule is not None and rule.scope in CONTROL and method not in BODYLESS

    async def refused(self, scope: AsgiScope, exc: Exception) -> None:
        """Audit a control action refused to a valid key (403, 429); a stranger's 401 is not
        written: it names no key, and a flood of them would only fill the disk."""
        status = getattr(exc, "status", 0)
        if status not in (403, 429):
            return
        method, path = scope["method"], scope["path"]
        rule = self.table.rule(method, path)
        if not self.is_control(rule, method):
            return
        try:
            caller = self.keyring.authenticate(authorization(scope))
        except Exception:
            return
        assert rule is not None
        await self.audit(
            caller, f"{method} {rule.path}", target_of(rule, path, None), peer_of(scope), str(status)
        )

    async def audit(self, caller: Caller, action: str, target: str, peer: str, outcome: str) -> None:
        """One audit row, written in a worker thread; a failed write is logged, never raised."""
        if self._audit_log is None:
            return
        entry = AuditEntry(self._clock(), caller.name, action, target, peer, outcome)
        try:
            await asyncio.to_thread(self._audit_log.record, entry)
        except Exception as exc:
            log.error("audit: %s by %s not written: %s", action, caller.name, exc)


def model_of(path: str, body: bytes) -> str | None:
    """The model or preset a data-path call names; None when it names none the gate can read
    (the endpoint then refuses the body itself)."""
    fixed = FIXED_MODELS.get(path)
    if fixed is not None:
        return fixed
    field = MODEL_FIELDS.get(path)
    if field is None:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    found = value.get(field) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def target_of(rule: Rule | None, path: str, body: bytes | None) -> str:
    """What a control action acts on: the path's named segments, else the body's stack, model,
    name or lease id."""
    if rule is not None and "{" in rule.path:
        named = [seg for tpl, seg in zip(rule.path.split("/"), path.split("/"), strict=False) if "{" in tpl]
        if named:
            return "/".join(named)
    try:
        value: object = json.loads(body) if body else None
    except ValueError:
        return ""
    if isinstance(value, dict):
        for field in TARGET_FIELDS:
            if isinstance(value.get(field), str):
                return str(value[field])[:200]
    return ""


def peer_of(scope: AsgiScope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""
