"""``stackd serve``: read the options, then become the daemon (``stackd.cli.serve_process``), or
start it in the background with ``--detach`` (``stackd.cli.lifecycle``).

Light on purpose: ``stackd.cli.main`` registers this command at start, so the daemon's modules
are imported only once ``serve`` runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stackd.cli.options import ConfigOpt, out

if TYPE_CHECKING:
    from stackd.cli.serve_process import ServeOptions
    from stackd.settings import Settings

HostOpt = Annotated[
    str,
    typer.Option(envvar="STACKD_HOST", help="Address to bind; off loopback every route needs the token."),
]
PortOpt = Annotated[int, typer.Option(envvar="STACKD_PORT", min=1, max=65535, help="Port to bind (1-65535).")]
ServeStateDirOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="STACKD_STATE_DIR",
        help="Where the token, the SQLite state and the journal live (default: ~/.local/state/stackd).",
    ),
]
GpuScenarioOpt = Annotated[
    Path | None, typer.Option(envvar="STACKD_GPU_SCENARIO", help="YAML of scripted GPUs (no NVML).")
]
GpuTotalGbOpt = Annotated[
    float | None,
    typer.Option(
        envvar="STACKD_GPU_TOTAL_GB", help="Plan for a card of this many GB instead of the one seen."
    ),
]
PeriodicOpt = Annotated[
    bool, typer.Option("--periodic/--no-periodic", help="Run health probes, drift checks and idle TTL.")
]
DetachOpt = Annotated[
    bool,
    typer.Option(
        "--detach", help="Run in the background (log: STATE_DIR/stackd.log); return once it serves."
    ),
]
LogContentOpt = Annotated[
    bool,
    typer.Option(
        "--log-content",
        envvar="STACKD_LOG_CONTENT",
        help="Write prompts and answers to the log (off: they are never logged).",
    ),
]
LogRequestsOpt = Annotated[
    bool,
    typer.Option(
        "--log-requests",
        envvar="STACKD_LOG_REQUESTS",
        help="One log line per request: method, path, status, milliseconds.",
    ),
]


def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8001,
    config: ConfigOpt = Path("config/model-stacks.yaml"),
    state_dir: ServeStateDirOpt = None,
    gpu_scenario: GpuScenarioOpt = None,
    gpu_total_gb: GpuTotalGbOpt = None,
    periodic: PeriodicOpt = True,
    detach: DetachOpt = False,
    log_content: LogContentOpt = False,
    log_requests: LogRequestsOpt = False,
) -> None:
    """Run the daemon (FastAPI on uvicorn), in the foreground unless --detach."""
    options: ServeOptions = {
        "host": host,
        "port": port,
        "config": config,
        "gpu_scenario": gpu_scenario,
        "gpu_total_gb": gpu_total_gb,
        "periodic": periodic,
        "log_content": log_content,
        "log_requests": log_requests,
    }
    if state_dir is not None:
        options["state_dir"] = state_dir
    if not detach and os.name == "posix":
        from stackd.cli.serve_process import exec_daemon

        exec_daemon(options, sys.argv[1:])  # the daemon keeps none of the CLI's modules
    from stackd.daemon import run
    from stackd.settings import Settings

    settings = Settings(**options)
    if detach:
        _serve_detached(settings, state_dir)
        return
    run(settings)


def _serve_detached(settings: Settings, state_dir: Path | None) -> None:
    """Start the daemon in the background and say how to stop it; ``state_dir``: the one given."""
    from stackd.cli.lifecycle import serve_detached

    url = f"http://{settings.host}:{settings.port}"
    # A bare `stackd stop` looks at the default state dir and port: the hint names the ones given.
    port_given = (settings.host, settings.port) != ("127.0.0.1", 8001)
    argv = [arg for arg in sys.argv[1:] if arg != "--detach"]
    pid, log_path = serve_detached(argv, settings.state_dir, url)
    again = [
        *([f"--state-dir {state_dir}"] if state_dir is not None else []),
        *([f"--url {url}"] if port_given else []),
    ]
    out.print(
        f"stackd is serving {url} (pid {pid}); log: {log_path}; stop it with: {' '.join(['stackd stop', *again])}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
