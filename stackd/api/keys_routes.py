"""``/keys`` (create, list, revoke, rotate), ``GET /audit`` and ``GET /usage/keys``.

The scope each needs is in ``stackd.api.scopes`` (admin for keys and the audit trail, read for
the usage); the front door's gate has decided it before a route runs, and writes the audit row
of each change after it answers. A key's text is in the answer of ``POST /keys`` and
``POST /keys/{name}/rotate`` only, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from stackd.api.json_route import JsonBodyRoute
from stackd.api.keyring import NAME, Keyring, KeySpec
from stackd.api.limits import KeyMeter
from stackd.api.scopes import Scope
from stackd.state.audit import AuditLog
from stackd.state.keys import KeyStore, spend_by_key


class KeyCreate(BaseModel):
    """A new key: its name, scopes, the models it may use and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME.pattern, description="The key's name (1-40 of a-z 0-9 . _ -).")
    scopes: list[Scope] = Field(min_length=1, description="Some of gateway, read, operator, admin.")
    models: list[str] = Field(default_factory=list, description="Models/roles it may call; empty: all.")
    rpm: int | None = Field(None, ge=1, description="Requests a minute.")
    daily_tokens: int | None = Field(None, ge=1, description="Tokens a day (UTC).")
    daily_cost_usd: float | None = Field(None, gt=0, description="Cloud cost a day (UTC), in USD.")
    expires_s: float | None = Field(None, gt=0, le=10 * 365 * 86400, description="Lifetime in seconds.")

    def to_spec(self) -> KeySpec:
        return KeySpec(
            self.name,
            tuple(scope.value for scope in self.scopes),
            tuple(self.models),
            self.rpm,
            self.daily_tokens,
            self.daily_cost_usd,
            self.expires_s,
        )


def build_keys_router(
    keyring: Keyring,
    meter: KeyMeter | None,
    store: KeyStore | None,
    audit_log: AuditLog | None,
    guard: Callable[..., None],
    read: Callable[..., None],
) -> APIRouter:
    router = APIRouter(route_class=JsonBodyRoute)

    def view(name: str) -> dict[str, object]:
        record = next(r for r in keyring.records() if r.name == name)
        tokens, cost = meter.today(name) if meter is not None else (0, 0.0)
        return {**record.to_public(), "today": {"tokens": tokens, "cost_usd": round(cost, 6)}}

    @router.get("/keys", dependencies=[Depends(guard)], response_model=None)
    async def list_keys() -> dict[str, object]:
        return {"keys": [view(r.name) for r in keyring.records()]}

    @router.post("/keys", dependencies=[Depends(guard)], response_model=None, status_code=201)
    async def create_key(body: KeyCreate) -> dict[str, object]:
        record, text = keyring.create(body.to_spec())
        return {"key": text, **view(record.name)}

    @router.delete("/keys/{name}", dependencies=[Depends(guard)], response_model=None)
    async def revoke_key(name: str) -> dict[str, object]:
        keyring.revoke(name)
        return {**view(name), "revoked_now": True}

    @router.post("/keys/{name}/rotate", dependencies=[Depends(guard)], response_model=None)
    async def rotate_key(name: str) -> dict[str, object]:
        record, text = keyring.rotate(name)
        return {"key": text, **view(record.name)}

    @router.get("/audit", dependencies=[Depends(guard)], response_model=None)
    async def audit(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100, key: Annotated[str | None, Query()] = None
    ) -> dict[str, object]:
        entries = audit_log.recent(limit, key) if audit_log is not None else []
        return {"entries": [e.to_dict() for e in entries]}

    @router.get("/usage/keys", dependencies=[Depends(read)], response_model=None)
    async def usage_by_key(since: Annotated[float, Query(ge=0)] = 0.0) -> dict[str, object]:
        spend = store.spend_since(since, since) if store is not None else {}
        return {"rows": spend_by_key(spend)}

    return router
