"""The daemon's start path loads only what every daemon needs (issue 25: idle RSS <= 80 MiB).

The MCP SDK, jsonschema, the docker SDK (and requests), the ollama client (and httpx, which
brings rich), gguf and prometheus_client are ~45 MiB of a daemon that imports them at start
(docs/benchmarks.md, "Idle memory"). Each is imported where it is first used instead: the MCP
server on the first ``/mcp`` request, jsonschema by the first request that carries a schema,
the docker SDK by the first client made once the engine's socket answers, the ollama client
once its port accepts a connection, prometheus_client at the first scrape of ``/metrics``.

A fresh interpreter builds the daemon's services and app from the bundled config, as
``stackd serve`` does, on a machine with no GPU, no Docker and no Ollama, and observes the
engines (the Docker and Ollama probes of a first start); then it uses each lazy path once, so
the check is shown to see an import when there is one.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stackd.drivers.docker_engine import NoEngine, check_socket, engine_socket, refused, unreachable

ROOT = Path(__file__).resolve().parents[2]

# Imported on first use only; never by building or starting the daemon.
LAZY = (
    "mcp",
    "mcp_types",
    "sse_starlette",
    "jsonschema",
    "referencing",
    "docker",
    "requests",
    "ollama",
    "httpx",
    "rich",
    "gguf",
    "prometheus_client",
    "stackd.api.answer_models",  # the OpenAPI document's, made at its first request
    "aiohttp",  # the router's session and the probes', made at the first call or probe
)

SCRIPT = """
import asyncio, json, sys, tempfile
from pathlib import Path

from stackd.daemon import build_app
from stackd.settings import Settings

LAZY = {lazy!r}


def loaded():
    return sorted(m for m in LAZY if m in sys.modules)


async def first_start(app):
    services = app.state.services
    observation = await services.manager.observe_detailed()
    await services.manager.ollama.close()
    return dict(observation.problems)


settings = Settings(config=Path("config/model-stacks.yaml"), state_dir=Path(tempfile.mkdtemp()), periodic=False)
app = build_app(settings)
problems = asyncio.run(first_start(app))
at_start = loaded()

# Each lazy path, used once.
from stackd.api.mcp_server import _load_sdk
from stackd.router.slices.validators import AnswerValidator

_load_sdk()
AnswerValidator(response_format={{"type": "json_schema", "json_schema": {{"schema": {{"type": "object"}}}}}})
import stackd.drivers.docker_engine as engine
try:
    engine.check_socket("/nonexistent/docker.sock")
except engine.NoEngine:
    pass
import docker, ollama, prometheus_client  # what the first client or scrape imports
print(json.dumps({{"at_start": at_start, "after_use": loaded(), "problems": problems}}))
"""


# The daemon's whole start up to its first /healthz: the app built, then its lifespan run (the
# first start's switch, the router) on the bundled config without fallback stacks, so that the
# default stack's first member, a container, fails at Docker and nothing is started. What can
# wait (the periodic jobs' scheduler, the settled heap) runs once the daemon serves.
LIFESPAN_SCRIPT = """
import asyncio, gc, json, re, sys, tempfile
from pathlib import Path

from stackd.daemon import ONCE_SERVING_AFTER_S, build_app
from stackd.settings import Settings

LAZY = {lazy!r}

state = Path(tempfile.mkdtemp())
config = state / "no-fallbacks.yaml"
text = Path("config/model-stacks.yaml").read_text()
config.write_text(re.sub(r"(?m)^fallback_stacks:.*$", "fallback_stacks: []", text))


def now():
    services = app.state.services
    return {{
        "loaded": sorted(m for m in LAZY if m in sys.modules),
        "scheduler": "apscheduler.schedulers" in sys.modules,
        "periodic": services.periodic is not None,
        "frozen": gc.get_freeze_count(),
    }}


async def start(app):
    async with app.router.lifespan_context(app):
        started = now()  # when /healthz answers
        await asyncio.sleep(ONCE_SERVING_AFTER_S + 0.5)
        return started, now(), str(app.state.services.manager.recovery)


app = build_app(Settings(config=config, state_dir=state, gpu_scenario=Path("config/examples/gpu-rtx5090.yaml")))
started, serving, recovery = asyncio.run(start(app))
print(json.dumps({{"started": started, "serving": serving, "recovery": recovery}}))
"""


def start_path(script: str = SCRIPT) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.update(
        {
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "OLLAMA_HOST": "http://127.0.0.1:9",  # discard: nothing listens
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", script.format(lazy=LAZY)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_the_daemons_start_path_imports_no_lazy_module() -> None:
    result = start_path()
    assert result["at_start"] == []
    # The probes ran and failed as on a bare machine, with the reasons the SDKs would give.
    problems = result["problems"]
    assert isinstance(problems, dict)
    assert (
        "Docker engine not reachable at unix:///nonexistent/docker.sock (DOCKER_HOST)" in problems["docker"]
    )
    assert "No such file or directory" in problems["docker"]
    assert "Ollama not reachable at" in problems["ollama"] and "connection refused" in problems["ollama"]
    # ... and the check sees a lazy module once it is used.
    after = result["after_use"]
    assert isinstance(after, list)
    for module in (
        "mcp",
        "mcp_types",
        "jsonschema",
        "docker",
        "requests",
        "ollama",
        "httpx",
        "prometheus_client",
    ):
        assert module in after


def test_the_first_start_up_to_healthz_imports_no_lazy_module() -> None:
    # The docker SDK was imported by the first start_container before the engine was asked for
    # (~0.1 s of CPU on every bare machine's start, in the window before /healthz answers).
    result = start_path(LIFESPAN_SCRIPT)
    started, serving = result["started"], result["serving"]
    assert started == {"loaded": [], "scheduler": False, "periodic": False, "frozen": 0}
    # Once it serves: the periodic jobs' scheduler started, the heap settled.
    assert isinstance(serving, dict)
    assert serving["scheduler"] and serving["periodic"] and serving["frozen"] > 10_000
    assert serving["loaded"] == ["aiohttp"]  # the first call will not pay its import
    recovery = str(result["recovery"])
    assert "first start: 'cloud-offload' could not run: start_container orchestrator-8b" in recovery
    assert "Docker engine not reachable at unix:///nonexistent/docker.sock" in recovery
    assert "No such file or directory" in recovery


def test_an_absent_socket_is_no_engine_with_the_os_reason(tmp_path: Path) -> None:
    with pytest.raises(NoEngine) as absent:
        check_socket(str(tmp_path / "docker.sock"))
    assert absent.value.errno == errno.ENOENT and absent.value.strerror == "No such file or directory"
    assert unreachable(absent.value) and not refused(absent.value)


def test_a_socket_nobody_listens_on_is_refused_and_a_listening_one_passes(tmp_path: Path) -> None:
    path = str(tmp_path / "engine.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        with pytest.raises(NoEngine) as stale:  # bound, not listening: what a dead engine leaves
            check_socket(path)
        assert stale.value.errno == errno.ECONNREFUSED
        server.listen(1)
        check_socket(path)  # accepted: the SDK is asked from here on


def test_only_a_unix_docker_host_is_checked_before_the_sdk() -> None:
    assert engine_socket({}) == "/var/run/docker.sock"
    assert engine_socket({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}) == "/run/user/1000/docker.sock"
    assert engine_socket({"DOCKER_HOST": "tcp://10.0.0.2:2376"}) is None
    assert engine_socket({"DOCKER_HOST": "ssh://me@host"}) is None
