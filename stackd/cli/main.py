"""The ``stackd`` command line. Read commands take ``--json``; errors print one line, no traceback.

Every command that talks to a daemon takes ``--url``, ``--token`` and ``--state-dir`` (see
``stackd.cli.client`` for how the token is found)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stackd import __version__
from stackd.cli import schedule_commands
from stackd.cli.key_commands import audit as key_audit
from stackd.cli.key_commands import keys_app
from stackd.cli.lease_commands import lease_app
from stackd.cli.log_commands import logs
from stackd.cli.options import (
    ConfigOpt,
    JsonOpt,
    StateDirOpt,
    TokenOpt,
    UrlOpt,
    WideOpt,
    client,
    emit,
    err,
    out,
)
from stackd.cli.serve_command import serve
from stackd.cli.slice_commands import slices_app
from stackd.errors import StackdError

if TYPE_CHECKING:
    from stackd.cli.shapes import Health

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Run a hybrid GPU / CPU / cloud model stack."
)
config_app = typer.Typer(no_args_is_help=True, help="Check the config file or print its JSON Schema.")
app.add_typer(config_app, name="config")


def show_version(value: bool) -> None:
    # stackd.__version__ is pyproject's version (tests/unit/test_cli_startup.py): reading the
    # installed metadata instead cost importlib.metadata's import on every `--version`.
    if value:
        sys.stdout.write(f"stackd {__version__}\n")
        raise typer.Exit()


@app.callback()
def cli(
    show: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Run a hybrid GPU / CPU / cloud model stack."""


app.command()(serve)


@app.command()
def stop(
    url: UrlOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Stop the daemon of the state dir (SIGTERM) and wait until it and its engines are gone."""
    from stackd import default_state_dir
    from stackd.cli.lifecycle import stop_daemon

    state = state_dir or Path(os.environ.get("STACKD_STATE_DIR") or default_state_dir())
    pid = stop_daemon(state, url or os.environ.get("STACKD_URL"))
    out.print(f"stopped stackd (pid {pid})")


@app.command()
def stacks(
    url: UrlOpt = None, token: TokenOpt = None, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """List the stacks and which one is active."""
    from stackd.api import answers
    from stackd.cli import render

    with client(url, token, state_dir) as c:
        data = c.get("/model-stacks", answers.StacksAnswer)
    emit(data, as_json, render.stacks_table(data))


@app.command()
def status(
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """The daemon reached, the active stack, GPU bar, members and role bindings."""
    from stackd.api import answers
    from stackd.cli import render

    with client(url, token, state_dir) as c:
        data = c.get("/status", answers.StatusAnswer)
        daemon: Health = {**c.health(), "url": c.url}  # the URL this CLI reached
    if as_json:
        out.print_json(data={**data, "daemon": daemon})
        return
    out.print(render.daemon_header(daemon))
    out.print(render.status_renderable(data, wide=wide))


@app.command()
def ps(
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The members as processes: PID, port, uptime, restarts, memory used / budget, state."""
    import time

    from stackd.api import answers
    from stackd.cli.ps_view import ps_rows, ps_table

    with client(url, token, state_dir) as c:
        data = c.get("/status", answers.StatusAnswer)
    rows = ps_rows(data, time.time())
    emit(
        {"active_stack": data.get("active_stack"), "members": rows},
        as_json,
        ps_table(rows, data.get("active_stack")),
    )


@app.command()
def roles(
    url: UrlOpt = None, token: TokenOpt = None, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """The live role table."""
    from stackd.api import answers
    from stackd.cli import render

    with client(url, token, state_dir) as c:
        data = c.get("/roles", answers.RolesAnswer)
    emit(data, as_json, render.roles_table(data))


@app.command()
def switch(
    stack: Annotated[str, typer.Argument(help="The stack to switch to (see 'stackd stacks').")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")] = False,
    hold: Annotated[
        str | None,
        typer.Option(
            "--hold", help="Keep STACK against the schedule and idleness: 2h, 90m, or until-next (default)."
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Switch to STACK, showing steps and pull progress live."""
    from stackd.api import answers
    from stackd.cli import render
    from stackd.cli.switch_view import follow_switch

    with client(url, token, state_dir, timeout=60.0) as c:
        if dry_run:
            data = c.post("/model-stacks/switch", {"stack": stack, "dry_run": True}, answers.DryRunAnswer)
            emit(data, as_json, render.plan_renderable(data["plan"]))
            return
        body: dict[str, object] = {"stack": stack, "wait": False, **({"hold": hold} if hold else {})}
        started = c.post("/model-stacks/switch", body, answers.SwitchAnswer)
        if not as_json:  # which daemon (and so which engines) this switch changes
            out.print(render.daemon_line({**c.health(), "url": c.url}), style="dim")
        result = follow_switch(c, started, out if not as_json else None)
    if as_json:
        out.print_json(data=result)
    if result.get("state") != "succeeded":
        raise typer.Exit(1)


@app.command()
def plan(
    stack: Annotated[str, typer.Argument(help="The stack to plan.")],
    config: ConfigOpt = Path("config/model-stacks.yaml"),
    gpu_total_gb: Annotated[float | None, typer.Option(help="Plan for a card of this many GB.")] = None,
    gpu_scenario: Annotated[Path | None, typer.Option(help="YAML of scripted GPUs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan a switch offline (no daemon): from nothing running to STACK on this hardware."""
    from stackd.cli import render
    from stackd.cli.offline import offline_plan

    data = offline_plan(config, stack, gpu_total_gb=gpu_total_gb, gpu_scenario=gpu_scenario)
    emit(data, as_json, render.plan_renderable(data))
    if not data["feasible"]:
        raise typer.Exit(2)


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="The model-stacks.yaml to check.")]) -> None:
    """Validate FILE; print each problem as FILE:LINE: field: what is wrong; how to fix it."""
    from stackd.config.loader import check_file

    problems = check_file(file)
    for problem in problems:
        err.print(str(problem), markup=False, highlight=False)
    if problems:
        err.print(f"{len(problems)} problem(s) in {file}", style="red")
        raise typer.Exit(1)
    out.print(f"{file}: OK")


@config_app.command("schema")
def config_schema(
    output: Annotated[
        Path | None, typer.Option("--out", help="Write it to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of model-stacks.yaml (for editor autocompletion)."""
    from stackd.config.loader import json_schema

    text = json.dumps(json_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


@app.command()
def sim(
    kind: Annotated[
        str, typer.Argument(help="ollama | openai | anthropic | gemini, or demo: every one --config needs")
    ],
    port: Annotated[int, typer.Option(help="Port to bind; 0 picks a free one (demo: the config's).")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind (demo: the config's).")] = "127.0.0.1",
    config: Annotated[
        Path, typer.Option("--config", help="demo: the config whose Ollama and loopback endpoints to serve.")
    ] = Path("config/examples/demo.yaml"),
    latency_ms: Annotated[float, typer.Option(help="Delay added to every answer, in ms.")] = 0.0,
    fault: Annotated[
        str,
        typer.Option(
            help="The fault to inject: none, refuse, http500, hang, slow_first_token, die_mid_stream, "
            "malformed_body, pull_fails_halfway."
        ),
    ] = "none",
) -> None:
    """Run a protocol-faithful simulator on loopback (for tests and demos), until Ctrl-C.

    `stackd sim demo` runs every simulator that config/examples/demo.yaml (or --config FILE) needs.
    That is its Ollama and its loopback remote endpoints, with one line per simulator and its URL."""
    from stackd.sim import run_sim

    if kind != "demo":
        run_sim(kind, host, port, latency_ms, fault)
        return
    from stackd.config.loader import load_config
    from stackd.sim.fleet import fleet_for
    from stackd.sim.runner import run_fleet

    run_fleet(fleet_for(load_config(config)), latency_ms, fault)


@app.command()
def reason(
    problem: Annotated[str, typer.Argument(help="The question or task.")],
    effort: Annotated[
        int, typer.Option(min=1, max=10, help="1-10: low is the reflex model, high the cloud GPU first.")
    ] = 5,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is written.")] = False,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Upper bound on the answer's tokens.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds the whole call may take; then it is cancelled.")
    ] = 120.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask reason() and print the answer and the attempts table. Ctrl-C cancels the backend call."""
    from stackd.cli.reason_view import ReasonOptions, run_reason

    options = ReasonOptions(effort=effort, stream=stream, max_tokens=max_tokens, timeout_s=timeout)
    # The daemon bounds the call by --timeout; the HTTP client waits a little longer for its answer.
    with client(url, token, state_dir, timeout=timeout + 10.0) as c:
        run_reason(c, out, problem, options, as_json)


@app.command()
def usage(
    url: UrlOpt = None,
    token: TokenOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
    by: Annotated[str | None, typer.Option("--by", help="'key': calls, tokens and cost per API key.")] = None,
) -> None:
    """Requests, failures, latency, tokens and cost per backend and strategy (or per key: --by key)."""
    from rich.console import Group

    from stackd.api import answers
    from stackd.cli import slices_view, usage_view

    if by is not None:
        from stackd.cli.key_commands import usage_by_key

        if by != "key":
            raise typer.BadParameter(f"--by '{by}': only 'key' is known")
        with client(url, token, state_dir) as c:
            keyed = c.get("/usage/keys")
        emit(keyed, as_json, usage_by_key(keyed))
        return
    with client(url, token, state_dir) as c:
        data = c.get("/usage", answers.UsageAnswer)
    energy = schedule_commands.energy_renderable(data)
    emit(
        data,
        as_json,
        Group(usage_view.usage_renderable(data, wide=wide), slices_view.usage_slices(data), energy),
    )


app.command()(logs)


def main() -> None:
    """Console entry point: one line per error, never a traceback.

    typer runs standalone, so it prints its own usage errors (the usage line, a hint, the error;
    exit 2) and handles ``typer.Exit`` and Ctrl-C. It raises those from the click it runs on,
    which since typer 0.2x is a copy bundled inside typer: catching ``click``'s exceptions here
    caught none of them. Only stackd's own errors are left to this function."""
    try:
        app()
    except StackdError as exc:
        err.print(f"{type(exc).__name__}: {exc.message}", markup=False, highlight=False)
        sys.exit(1)


app.add_typer(slices_app, name="slices")
app.add_typer(lease_app, name="lease")
app.command("schedule")(schedule_commands.schedule)
app.add_typer(keys_app, name="keys")
app.command("audit")(key_audit)
