"""``stackd lease``: leases of on-demand GPU models (vision, diffusion)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from stackd.cli.options import JsonOpt, StateDirOpt, TokenOpt, UrlOpt, client, emit

if TYPE_CHECKING:
    from rich.table import Table

    from stackd.cli.usage_shapes import LeaseRow

lease_app = typer.Typer(no_args_is_help=True, help="Lease on-demand GPU models (vision, diffusion).")


def _lease_table(leases: list[LeaseRow]) -> Table:
    from rich.table import Table

    table = Table("id", "model", "expires in", "endpoint")
    for lease in leases:
        table.add_row(lease["id"], lease["model"], f"{lease['expires_in_s']:.0f} s", lease["endpoint"] or "")
    return table


@lease_app.command("acquire")
def lease_acquire(
    model: Annotated[str, typer.Argument(help="An on-demand GPU member of the active stack.")],
    ttl: Annotated[
        float | None, typer.Option("--ttl", help="Seconds (default: the model's idle_ttl_s).")
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait", help="Seconds to wait in the queue while a lease or another process holds the memory."
        ),
    ] = 0.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start MODEL (evicting the idle members that make it fit) and lease it; waits until ready."""
    from stackd.api import answers

    with client(
        url, token, state_dir, timeout=900.0 + wait
    ) as c:  # a start waits for the model's health, up to its start timeout
        data = c.post("/leases", {"model": model, "ttl_s": ttl, "wait_s": wait}, answers.LeaseAnswer)
    emit(data, as_json, _lease_table([data]))


@lease_app.command("release")
def lease_release(
    lease_id: Annotated[str, typer.Argument(help="The lease's id (see 'stackd lease list').")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End LEASE_ID; the model keeps running until its idle TTL."""
    from stackd.api import answers
    from stackd.cli.client import check_answer

    with client(url, token, state_dir) as c:
        data = check_answer(c.request("DELETE", f"/leases/{lease_id}"), answers.LeaseAnswer, "DELETE /leases")
    emit(data, as_json, f"released lease {data['id']} ({data['model']})")


@lease_app.command("list")
def lease_list(
    url: UrlOpt = None, token: TokenOpt = None, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """The live leases, and the requests waiting for one (with why)."""
    from rich.console import Group
    from rich.text import Text

    from stackd.api import answers

    with client(url, token, state_dir) as c:
        data = c.get("/leases", answers.LeasesAnswer)
    waiting = [
        Text(f"waiting: {w['model']} ({w['deadline_in_s']:.0f} s left): {w['reason']}")
        for w in data.get("queue", [])
    ]
    emit(data, as_json, Group(_lease_table(data["leases"]), *waiting))
