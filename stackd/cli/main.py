"""The ``stackd`` command line. Read commands take ``--json``; errors print one line, no traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console

from stackd.cli import render
from stackd.cli.client import DaemonClient, find_token
from stackd.errors import StackdError

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Run a hybrid GPU / CPU / cloud model stack."
)
config_app = typer.Typer(no_args_is_help=True, help="Check the config file or print its JSON Schema.")
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True, soft_wrap=True)

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="STACKD_URL", help="Daemon URL.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def client(url: str | None, timeout: float = 30.0) -> DaemonClient:
    return DaemonClient(url, find_token(), timeout=timeout)


def emit(data: Any, as_json: bool, renderable: Any = None) -> None:
    if as_json:
        out.print_json(data=data)
    else:
        out.print(renderable if renderable is not None else data)


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="STACKD_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="STACKD_PORT")] = 8001,
    config: Annotated[Path, typer.Option(envvar="STACKD_CONFIG")] = Path("config/model-stacks.yaml"),
    state_dir: Annotated[Path | None, typer.Option(envvar="STACKD_STATE_DIR")] = None,
    gpu_scenario: Annotated[
        Path | None, typer.Option(envvar="STACKD_GPU_SCENARIO", help="YAML of scripted GPUs (no NVML).")
    ] = None,
    gpu_total_gb: Annotated[float | None, typer.Option(envvar="STACKD_GPU_TOTAL_GB")] = None,
    no_periodic: Annotated[
        bool, typer.Option(help="Disable health probes, drift checks and idle TTL.")
    ] = False,
) -> None:
    """Run the daemon (FastAPI on uvicorn)."""
    from stackd.daemon import run
    from stackd.settings import Settings

    kwargs: dict[str, Any] = {
        "host": host,
        "port": port,
        "config": config,
        "gpu_scenario": gpu_scenario,
        "gpu_total_gb": gpu_total_gb,
        "periodic": not no_periodic,
    }
    if state_dir is not None:
        kwargs["state_dir"] = state_dir
    run(Settings(**kwargs))


@app.command()
def stacks(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """List the stacks and which one is active."""
    with client(url) as c:
        data = c.get("/model-stacks")
    emit(data, as_json, render.stacks_table(data))


@app.command()
def status(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Active stack, GPU bar, members and role bindings."""
    with client(url) as c:
        data = c.get("/status")
    emit(data, as_json, render.status_renderable(data))


@app.command()
def roles(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """The live role table."""
    with client(url) as c:
        data = c.get("/roles")
    emit(data, as_json, render.roles_table(data))


@app.command()
def switch(
    stack: str,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Switch to STACK, showing steps and pull progress live."""
    from stackd.cli.switch_view import follow_switch

    with client(url, timeout=60.0) as c:
        if dry_run:
            data = c.post("/model-stacks/switch", {"stack": stack, "dry_run": True})
            emit(data, as_json, render.plan_renderable(data["plan"]))
            return
        started = c.post("/model-stacks/switch", {"stack": stack, "wait": False})
        result = follow_switch(c, started, out if not as_json else None)
    if as_json:
        out.print_json(data=result)
    if result.get("state") != "succeeded":
        raise typer.Exit(1)


@app.command()
def plan(
    stack: str,
    config: Annotated[Path, typer.Option(envvar="STACKD_CONFIG")] = Path("config/model-stacks.yaml"),
    gpu_total_gb: Annotated[float | None, typer.Option(help="Plan for a card of this size.")] = None,
    gpu_scenario: Annotated[Path | None, typer.Option(help="YAML of scripted GPUs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan a switch offline (no daemon): from nothing running to STACK on this hardware."""
    from stackd.offline import offline_plan

    data = offline_plan(config, stack, gpu_total_gb=gpu_total_gb, gpu_scenario=gpu_scenario)
    emit(data, as_json, render.plan_renderable(data))
    if not data["feasible"]:
        raise typer.Exit(2)


@config_app.command("check")
def config_check(file: Path) -> None:
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
def config_schema(output: Annotated[Path | None, typer.Option("--out")] = None) -> None:
    """Print the JSON Schema of model-stacks.yaml (for editor autocompletion)."""
    from stackd.config.loader import json_schema

    text = json.dumps(json_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


@app.command()
def sim(
    kind: Annotated[str, typer.Argument(help="ollama | openai | anthropic | gemini")],
    port: Annotated[int, typer.Option()] = 0,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option()] = 0.0,
    fault: Annotated[
        str,
        typer.Option(
            help="none, refuse, http500, hang, slow_first_token, die_mid_stream, "
            "malformed_body, pull_fails_halfway"
        ),
    ] = "none",
) -> None:
    """Run a protocol-faithful simulator on loopback (for tests and demos)."""
    from stackd.sim import run_sim

    run_sim(kind, host, port, latency_ms, fault)


@app.command()
def reason(
    problem: str,
    effort: Annotated[int, typer.Option(min=1, max=10)] = 5,
    stream: Annotated[bool, typer.Option("--stream")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask reason() and print the answer and the attempts table."""
    from stackd.cli.reason_view import run_reason

    with client(url, timeout=600.0) as c:
        run_reason(c, out, problem, effort, stream, as_json)


@app.command()
def usage(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Requests, failures, latency, tokens and cost per backend and strategy."""
    with client(url) as c:
        data = c.get("/usage")
    emit(data, as_json, render.usage_table(data))


def main() -> None:
    """Console entry point: one line per error, never a traceback."""
    try:
        rc = app(standalone_mode=False)
    except StackdError as exc:
        err.print(f"{type(exc).__name__}: {exc.message}", markup=False, highlight=False)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


# ---------------------------------------------------------------- leases of on-demand GPU models

lease_app = typer.Typer(no_args_is_help=True, help="Lease on-demand GPU models (vision, diffusion).")
app.add_typer(lease_app, name="lease")


def _lease_table(leases: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table("id", "model", "expires in", "endpoint")
    for lease in leases:
        table.add_row(lease["id"], lease["model"], f"{lease['expires_in_s']:.0f} s", lease["endpoint"] or "")
    return table


@lease_app.command("acquire")
def lease_acquire(
    model: str,
    ttl: Annotated[float | None, typer.Option("--ttl", help="Seconds (default: the model's idle_ttl_s).")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start MODEL (evicting an unleased member of its swap group) and lease it; waits until ready."""
    with client(url, timeout=900.0) as c:  # a start waits for the model's health, up to its start timeout
        data = c.post("/leases", {"model": model, "ttl_s": ttl})
    emit(data, as_json, _lease_table([data]))


@lease_app.command("release")
def lease_release(lease_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """End LEASE_ID; the model keeps running until its idle TTL."""
    with client(url) as c:
        data = c.request("DELETE", f"/leases/{lease_id}")
    emit(data, as_json, f"released lease {data['id']} ({data['model']})")


@lease_app.command("list")
def lease_list(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """The live leases."""
    with client(url) as c:
        data = c.get("/leases")
    emit(data, as_json, _lease_table(data["leases"]))
