"""``stackd keys`` (create, list, revoke, rotate) and ``stackd audit``: through the daemon's
``/keys`` and ``/audit`` (admin scope; the state dir's token has it)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Annotated

import typer

from stackd.cli.options import JsonOpt, StateDirOpt, TokenOpt, UrlOpt, client, emit
from stackd.errors import StackdError

if TYPE_CHECKING:
    from rich.table import Table

    from stackd.cli.usage_shapes import KeyRow, KeyUsage

keys_app = typer.Typer(no_args_is_help=True, help="API keys with scopes and limits (admin).")
UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadDuration(StackdError):
    """A duration the CLI cannot read (``--expires``)."""


def duration_s(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or a number of seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if found is None or float(found[1]) <= 0:
        raise BadDuration(f"--expires '{text}' is not a duration; write e.g. 30d, 12h, 90m or 3600")
    return float(found[1]) * UNITS_S[found[2] or "s"]


def _keys_table(keys: list[KeyRow]) -> Table:
    from rich.table import Table

    table = Table("name", "scopes", "models", "limits", "today", "expires", "state")
    now = time.time()
    for k in keys:
        limits = ", ".join(
            f"{label} {value:g}"
            for value, label in (
                (k.get("rpm"), "rpm"),
                (k.get("daily_tokens"), "tokens/day"),
                (k.get("daily_cost_usd"), "USD/day"),
            )
            if value is not None
        )
        expires = "" if k["expires"] is None else f"in {(k['expires'] - now) / 86400:.1f} d"
        state = "revoked" if k["revoked"] else ("expired" if k["expires"] and k["expires"] <= now else "live")
        today = f"{k['today']['tokens']} tok, ${k['today']['cost_usd']:.4f}"
        table.add_row(
            k["name"], ",".join(k["scopes"]), ",".join(k["models"]) or "all", limits, today, expires, state
        )
    return table


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="The key's name (a-z 0-9 . _ -).")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="gateway, read, operator or admin; repeat for more.")
    ],
    models: Annotated[
        list[str] | None, typer.Option("--models", help="A model or role it may call; repeat. Default: all.")
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests a minute.")] = None,
    daily_tokens: Annotated[
        int | None, typer.Option("--daily-tokens", min=1, help="Tokens a day (UTC).")
    ] = None,
    daily_cost: Annotated[
        float | None, typer.Option("--daily-cost", min=0.000001, help="Cloud cost a day (UTC), USD.")
    ] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime: 30d, 12h, 90m.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it, once: it is stored hashed and cannot be shown again."""
    body = {
        "name": name,
        "scopes": scope,
        "models": [m for value in models or [] for m in value.split(",") if m],
        "rpm": rpm,
        "daily_tokens": daily_tokens,
        "daily_cost_usd": daily_cost,
        "expires_s": duration_s(expires) if expires else None,
    }
    with client(url, token, state_dir) as c:
        data = c.post("/keys", body)
    emit(
        data,
        as_json,
        f"{data['key']}\n(key '{data['name']}', scopes {', '.join(data['scopes'])}: shown once)",
    )


@keys_app.command("list")
def keys_list(
    url: UrlOpt = None, token: TokenOpt = None, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Every key: scopes, models, limits, what it used today; never the key itself."""
    with client(url, token, state_dir) as c:
        data = c.get("/keys")
    emit(data, as_json, _keys_table(data["keys"]))


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke NAME: its next request is refused (401), no restart needed."""
    with client(url, token, state_dir) as c:
        data = c.request("DELETE", f"/keys/{name}")
    emit(data, as_json, f"revoked key '{name}'")


@keys_app.command("rotate")
def keys_rotate(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A new key text for NAME (same scopes and limits); the old text stops working now."""
    with client(url, token, state_dir) as c:
        data = c.post(f"/keys/{name}/rotate", {})
    emit(data, as_json, f"{data['key']}\n(key '{name}' rotated: shown once)")


def audit(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=10000, help="How many, newest first.")
    ] = 50,
    key: Annotated[str | None, typer.Option("--key", help="Only this key's actions.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Control actions (switches, leases, reloads, key changes): who, what, from where, the outcome."""
    from rich.table import Table

    params: dict[str, str | int] = {"limit": limit} | ({"key": key} if key else {})
    with client(url, token, state_dir) as c:
        data = c.get("/audit", params=params)
    table = Table("time", "key", "action", "target", "peer", "outcome")
    for e in data["entries"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
        table.add_row(when, e["key"], e["action"], e["target"], e["peer"], e["outcome"])
    emit(data, as_json, table)


def usage_by_key(data: KeyUsage) -> Table:
    from rich.table import Table

    table = Table("key", "calls", "tokens", "cost (USD)")
    for row in data["rows"]:
        table.add_row(row["key"], str(row["calls"]), str(row["tokens"]), f"{row['cost_usd']:.6f}")
    return table
