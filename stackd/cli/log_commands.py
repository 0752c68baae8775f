"""``stackd logs``: an engine's log through the daemon (``GET /members/{name}/logs``), or with no
member the daemon's own log, read from its state dir (``stackd.cli.daemon_log``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from stackd.cli.options import StateDirOpt, TokenOpt, UrlOpt, client, out
from stackd.errors import StackdError


def logs(
    member: Annotated[
        str | None,
        typer.Argument(
            help="A member of the config (a process or docker engine); none: the daemon's own log."
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=1, max=10000, help="How many of the last lines.")
    ] = 100,
    probes: Annotated[
        bool, typer.Option("--probes", help="Keep the health probes' requests (left out by default).")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """An engine's own log (a process member's log file, a docker member's container log), or
    with no MEMBER the daemon's log (STATE_DIR/stackd.log of a detached daemon)."""
    if member is None:
        _daemon_logs(follow, lines, url, state_dir)
        return
    path = f"/members/{member}/logs"
    keep = "true" if probes else "false"
    with client(url, token, state_dir) as c:
        if not follow:
            for line in c.get(path, params={"lines": lines, "probes": keep})["lines"]:
                out.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        for event in c.stream_events(f"{path}?follow=true&lines={lines}&probes={keep}"):
            out.print(event["line"], markup=False, highlight=False, soft_wrap=True)


def _daemon_logs(follow: bool, lines: int, url: str | None, state_dir: Path | None) -> None:
    from stackd import default_state_dir
    from stackd.cli import daemon_log
    from stackd.cli.client import DaemonClient, default_url

    state = state_dir or (
        Path(os.environ["STACKD_STATE_DIR"]) if os.environ.get("STACKD_STATE_DIR") else None
    )
    if state is None:  # the state dir the daemon names, else the default one
        try:
            with DaemonClient(url or default_url(), None, timeout=5.0) as c:
                named = c.health().get("state_dir")
        except StackdError:
            named = None
        state = Path(named) if named else default_state_dir()
    path = daemon_log.daemon_log(state)
    last, offset = daemon_log.last_lines(path, lines)
    for line in last:
        sys.stdout.write(line + "\n")
    if follow:
        sys.stdout.flush()
        for line in daemon_log.follow(path, offset):
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
