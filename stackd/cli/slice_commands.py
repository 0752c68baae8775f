"""``stackd slices``: the elastic slice router's kill switch and per-slice tallies."""

from __future__ import annotations

from typing import Annotated

import typer

from stackd.cli.options import JsonOpt, StateDirOpt, TokenOpt, UrlOpt, client, emit

slices_app = typer.Typer(
    no_args_is_help=True, help="Elastic slice routing: kill switch, budgets, per-slice tallies."
)


@slices_app.command("show")
def slices_show(
    url: UrlOpt = None, token: TokenOpt = None, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """The kill switch, the budgets spent today, acceptance/latency/promotions per slice."""
    from stackd.cli import slices_view

    with client(url, token, state_dir) as c:
        data = c.get("/slices")
    emit(data, as_json, slices_view.slices_renderable(data))


@slices_app.command("kill-switch")
def slices_kill_switch(
    state: Annotated[str, typer.Argument(help="on: every routed call goes to the largest slice; off.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (logged, shown by 'show').")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn the kill switch on or off."""
    if state not in {"on", "off"}:
        raise typer.BadParameter("say 'on' or 'off'", param_hint="STATE")
    with client(url, token, state_dir) as c:
        data = c.post("/slices/kill-switch", {"on": state == "on", "reason": reason})
    emit(data, as_json, f"kill switch {'ON' if data['kill_switch'] else 'off'}")
