"""The README, exactly as written: its ```bash blocks pasted in order into one fresh shell.

The shell is ``bash --norc`` with a fresh HOME (so the default state dir is new), in the
checkout, with the machine's Docker engine (DOCKER_HOST) and nothing else of the test run's
environment. One block is left out, and only one: the test command (``scripts/test``), which is
this suite itself. The install block runs as written (``python3 -m venv .venv && pip install``:
on a checkout whose .venv is complete it installs nothing new). The run must end with the demo
having switched through all four stacks, ``docker ps`` matching each, the orchestrator answering
a chat, no Python traceback anywhere, and every daemon and engine stopped.

Needs ports 8001, 11434 and 8300-8303 free (the README's own), a Docker engine, and the local
engines; under CI=true nothing here may skip.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import docker
import pytest

from stackd.config.loader import load_config
from stackd.config.models import Lifecycle
from tests.conftest import SESSION_ENV

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEMO = ROOT / "config" / "examples" / "demo.yaml"
PORTS = (8001, 11434, 8300, 8301, 8302, 8303)

# serial: the README's own ports (8001, 11434, 8300-8303) and its clean-up of every demo container
pytestmark = [pytest.mark.docker, pytest.mark.llm, pytest.mark.serial]


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def expected_containers(stack: str) -> list[str]:
    config = load_config(DEMO, env={})
    return sorted(
        config.models[m].docker.container  # type: ignore[union-attr]
        for m in config.stacks[stack].member_names
        if config.models[m].docker is not None and config.models[m].lifecycle == Lifecycle.always_on
    )


@pytest.fixture
def engine() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI=true requires a Docker engine (DOCKER_HOST): {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    busy = [p for p in PORTS if not port_free(p)]
    if busy:
        message = f"the README's ports are in use: {busy}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return client


def test_the_readme_blocks_work_when_pasted_in_order(engine: docker.DockerClient, tmp_path: Path) -> None:
    blocks = bash_blocks(README.read_text())
    tests = [b for b in blocks if "scripts/test" in b]
    assert len(tests) == 1, "exactly one block runs the tests"
    script = "\n".join(
        f"echo '=== README block {i}'\n{block}" for i, block in enumerate(blocks) if block not in tests
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "COLUMNS": "100",
        "TERM": "dumb",
        SESSION_ENV: os.environ[SESSION_ENV],
    }  # the leak check's marker
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    try:
        done = subprocess.run(
            ["bash", "--norc", "--noprofile", "-s"],
            input=script,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
    finally:
        # Whatever happened: no daemon, simulator or demo container of this run is left.
        for state in (home / ".local" / "state" / "stackd", Path("/tmp/stackd-demo")):
            subprocess.run(
                [str(ROOT / ".venv" / "bin" / "stackd"), "stop", "--state-dir", str(state)],
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
        subprocess.run(["pkill", "-f", "stackd.cli sim demo|stackd sim demo"], check=False)
        for container in engine.containers.list(all=True, filters={"label": "stackd.demo=true"}):
            container.remove(force=True)
    output = done.stdout + done.stderr
    (tmp_path / "readme-run.log").write_text(output)
    assert "Traceback" not in output, output[-6000:]
    # The first daemon: a real model answered on a machine without a GPU, Docker stack or Ollama.
    assert "answered by smollm2-135m" in output, output[-6000:]
    # ... and it answered the README's question (a base model echoed it and rambled on).
    assert re.search(r"^(2 ?\+ ?3 ?= ?)?5\.?$", output, re.MULTILINE), output[-6000:]
    # The demo: each of the four stacks, and exactly its containers.
    for stack in ("elastic-hybrid", "ollama-hybrid", "ollama-only", "cloud-offload"):
        line = next((x for x in output.splitlines() if x.startswith(f"{stack} runs:")), None)
        assert line is not None, f"no switch to {stack}: {output[-6000:]}"
        running = sorted(line.split(":", 1)[1].split())
        assert running == expected_containers(stack), line
    assert '"chat.completion"' in output and '"content":"' in output  # the demo orchestrator answered
    # the second lease, as the README says: 503 at once naming vision's lease (409 before the wait queue)
    assert "waiting for lease" in output and "vision-qwen25vl" in output
    assert done.returncode == 0, output[-6000:]
