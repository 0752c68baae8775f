"""What every ``stackd`` command shares: the consoles, the daemon options, the client, ``emit``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:  # httpx and pydantic load when a command talks to a daemon, not at start-up
    from rich.console import RenderableType

    from stackd.cli.client import DaemonClient

out = Console()
err = Console(stderr=True, soft_wrap=True)

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="STACKD_URL", help="The daemon's URL (default: http://127.0.0.1:8001)."),
]
# No envvar= for these two: the client applies "a flag beats its variable" across both of them.
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="The daemon's bearer token (default: $STACKD_TOKEN, else the token file of its state dir).",
    ),
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="The daemon's state dir, whose 'token' file holds its token "
        "(default: $STACKD_STATE_DIR, else the one the daemon names in /healthz).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="All columns and details (wider than 80 columns).")]
ConfigOpt = Annotated[
    Path, typer.Option("--config", envvar="STACKD_CONFIG", help="The model-stacks.yaml to run or plan.")
]


def client(url: str | None, token: str | None, state_dir: Path | None, timeout: float = 30.0) -> DaemonClient:
    from stackd.cli.client import DaemonClient

    return DaemonClient.connect(url, token, state_dir, timeout=timeout)


def emit(data: object, as_json: bool, renderable: RenderableType | None = None) -> None:
    if as_json:
        out.print_json(data=data)
    else:
        out.print(renderable if renderable is not None else data)
