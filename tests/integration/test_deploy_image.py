"""deploy/Dockerfile builds with no image registry; the image, run with nothing given (no GPU,
no Docker socket, no cloud key), falls back to the embedded stack and answers a chat with the
embedded model; Docker calls it unhealthy while no stack is active, and the log then says what
helps in a container; with the Docker socket and its group it manages model containers.

The base image is made here: ``scripts/build-base-image`` debootstraps a Debian rootfs with
python3 and python3-venv and ``docker import``s it (the rootfs is cached in ~/.cache/stackd, so
only the first run downloads it); ``scripts/build-image`` installs stackd into it offline from a
wheelhouse built on this machine, the `local` extra's included (llama-cpp-python is compiled
once, portable, into ~/.cache/stackd/wheels: minutes the first time). The container then runs as the operator's guide runs it on a
bridge network (``STACKD_HOST=0.0.0.0`` with a token), with its state in a volume; and as
docs/operations.md runs it beside model containers (host network, the engine's socket mounted)
on the drill config, where it starts a stackd-demo container, or says "Permission denied" without
the socket's group.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.errors import NotFound
from docker.models.containers import Container

from tests.integration.conftest import REPO

pytestmark = pytest.mark.docker

BASE_IMAGE = "stackd-base:bookworm"
IMAGE = "stackd:deploy-test"
TOKEN = "deploy-test-" + uuid.uuid4().hex
HEALTHY_WITHIN_S = 90
# The first start of the bundled config here tries default_stack and each fallback before the
# embedded stack, then starts its engine and warms it up (10 s at load 8): slower than the drill's.
EMBEDDED_WITHIN_S = 240
BUILD_IMAGE_S = 1500  # llama-cpp-python compiled from source when the wheel cache is cold


def run_script(*args: str, timeout: float) -> str:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(REPO / "scripts" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def image(docker_engine: docker.DockerClient) -> str:
    # Both images stay (like stackd-demo:latest): the next run reuses their layers.
    run_script("build-base-image", BASE_IMAGE, timeout=240)
    run_script("build-image", "--base", BASE_IMAGE, "--tag", IMAGE, timeout=BUILD_IMAGE_S)
    return IMAGE


@pytest.fixture
def daemon(
    docker_engine: docker.DockerClient, image: str, container_name: Callable[[], str]
) -> Iterator[Container]:
    container = docker_engine.containers.run(
        image,
        name=container_name(),
        detach=True,
        ports={"8001/tcp": ("127.0.0.1", None)},
        environment={"STACKD_HOST": "0.0.0.0", "STACKD_TOKEN": TOKEN},
        # The image's own check (Test inherited), polled every second instead of every 30 s.
        healthcheck={"test": [], "interval": 1_000_000_000, "start_period": 60_000_000_000},
    )
    try:
        yield container
    finally:
        container.remove(force=True, v=True)  # v: the state volume too


def wait_health(container: Container, want: str = "healthy", within_s: float = EMBEDDED_WITHIN_S) -> str:
    deadline = time.monotonic() + within_s
    status = "starting"
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            pytest.fail(
                f"the daemon exited ({container.attrs['State']['ExitCode']}):\n{container.logs().decode()}"
            )
        status = container.attrs["State"].get("Health", {}).get("Status", "none")
        if status == want:
            return status
        time.sleep(0.5)
    pytest.fail(f"Docker health status still {status} after {within_s} s:\n{container.logs().decode()}")


def test_the_image_runs_unprivileged_with_its_state_in_a_volume_and_a_health_check(
    docker_engine: docker.DockerClient, image: str
) -> None:
    config = docker_engine.images.get(image).attrs["Config"]
    assert config["User"] == "stackd"
    assert "/var/lib/stackd" in config["Volumes"]
    assert "STACKD_STATE_DIR=/var/lib/stackd" in config["Env"]
    assert any("/healthz" in part for part in config["Healthcheck"]["Test"])


def test_the_container_serves_healthz_and_docker_calls_it_healthy(daemon: Container) -> None:
    assert wait_health(daemon) == "healthy"
    port = daemon.ports["8001/tcp"][0]["HostPort"]
    base = f"http://127.0.0.1:{port}"
    health = httpx.get(f"{base}/healthz", timeout=5)
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "version": health.json()["version"],
        "stack_active": True,
        "url": None,
        "pid": None,
        "config": None,
        "state_dir": None,
        "token_source": None,
    }
    # Off loopback every route but /healthz needs the token, and the token works.
    assert httpx.get(f"{base}/status", timeout=5).status_code == 401
    status = httpx.get(f"{base}/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert status.status_code == 200, status.text
    assert TOKEN not in daemon.logs().decode()
    # The status page's files are package data: the wheel the image installs must carry them.
    page = httpx.get(f"{base}/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text

    uid = daemon.exec_run(["id", "-u"]).output.decode().strip()
    assert uid == "10001"
    listing = daemon.exec_run(["stat", "-c", "%a %U %n", "/var/lib/stackd", "/var/lib/stackd/stackd.db"])
    assert listing.output.decode().split("\n")[:2] == [
        "700 stackd /var/lib/stackd",
        "600 stackd /var/lib/stackd/stackd.db",
    ]
    mounts = {m["Destination"]: m["Type"] for m in daemon.attrs["Mounts"]}
    assert mounts.get("/var/lib/stackd") == "volume"


def test_with_nothing_given_it_answers_with_the_embedded_model(daemon: Container) -> None:
    """No GPU, no Docker socket, no cloud key: the bundled config's first start falls back to
    `embedded`, whose engine and model are in the image."""
    wait_health(daemon)
    logs = daemon.logs().decode()
    assert "so stackd picked 'embedded' from fallback_stacks" in logs, logs
    port = daemon.ports["8001/tcp"][0]["HostPort"]
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={
            "model": "orchestrator",
            "messages": [{"role": "user", "content": "What is 2+3? Answer with the number only."}],
            "temperature": 0,
            "max_tokens": 16,
        },
        timeout=180,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "5" in body["choices"][0]["message"]["content"], body
    assert body["usage"]["completion_tokens"] > 0
    assert body["stackd"]["backend"] == "smollm2-135m", body["stackd"]


def test_while_no_stack_is_active_docker_calls_it_unhealthy_and_the_log_says_what_helps_here(
    docker_engine: docker.DockerClient, image: str, container_name: Callable[[], str], tmp_path: Path
) -> None:
    # The drill's stacks need a GPU (and the Docker socket): neither is given, so none can run.
    text = (REPO / "config" / "examples" / "ops-drill.yaml").read_text(encoding="utf-8")
    config = tmp_path / "model-stacks.yaml"
    config.write_text(text + "\nfallback_stacks: [broken]\n", encoding="utf-8")
    config.chmod(0o644)
    container = docker_engine.containers.run(
        image,
        name=container_name(),
        detach=True,
        volumes={str(config): {"bind": "/etc/stackd/model-stacks.yaml", "mode": "ro"}},
        healthcheck={"test": [], "interval": 1_000_000_000, "start_period": 1_000_000_000, "retries": 1},
    )
    try:
        logs = wait_for_recovery(container)
        assert "no stack of default_stack and fallback_stacks could run here; in this container:" in logs
        assert "mount a config whose stacks can run here" in logs and "--gpus all" in logs
        assert "pip install" not in logs
        said = last_check_saying(container, "no stack is active")  # not a check of a daemon still starting
        assert said["ExitCode"] == 1, said
        assert container.attrs["State"]["Health"]["Status"] == "unhealthy"
        health = container.exec_run(["python3", "-c", HEALTHZ]).output.decode()
        assert '"stack_active":false' in health, health
    finally:
        container.remove(force=True, v=True)


def last_check_saying(container: Container, words: str) -> dict[str, Any]:
    """The newest run of the image's HEALTHCHECK once its output holds ``words``."""
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        container.reload()
        runs = container.attrs["State"].get("Health", {}).get("Log") or [{}]
        if words in runs[-1].get("Output", ""):
            return runs[-1]
        time.sleep(0.5)
    pytest.fail(f"no health check said {words!r} in {HEALTHY_WITHIN_S} s: {container.attrs['State']}")


HEALTHZ = (
    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8001/healthz').read().decode())"
)


def engine_socket() -> Path:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.fail(f"DOCKER_HOST={host}: this test mounts the engine's unix socket into the container")
    return Path(host.removeprefix("unix://"))


def drill_config(tmp_path: Path, free_port: Callable[[], int]) -> tuple[Path, str]:
    """config/examples/ops-drill.yaml with a container name and a port of this test's own."""
    prefix = f"stackd-test-{uuid.uuid4().hex[:8]}-"
    text = (REPO / "config" / "examples" / "ops-drill.yaml").read_text(encoding="utf-8")
    for port in ("18401", "18402", "18403"):
        text = text.replace(port, str(free_port()))
    path = tmp_path / "model-stacks.yaml"
    path.write_text(text.replace("container: ops-", f"container: {prefix}"), encoding="utf-8")
    path.chmod(0o644)
    return path, f"{prefix}orchestrator"


def run_beside_containers(
    docker_engine: docker.DockerClient, image: str, name: str, config: Path, port: int, group: bool
) -> Container:
    sock = engine_socket()
    return docker_engine.containers.run(
        image,
        ["serve", "--gpu-total-gb", "32"],
        name=name,
        detach=True,
        network_mode="host",
        environment={"STACKD_PORT": str(port)},
        volumes={
            str(config): {"bind": "/etc/stackd/model-stacks.yaml", "mode": "ro"},
            str(sock): {"bind": "/var/run/docker.sock", "mode": "rw"},
        },
        group_add=[str(sock.stat().st_gid)] if group else [],
    )


def wait_for_recovery(container: Container) -> str:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        logs = container.logs().decode()
        if "recovery:" in logs:
            return logs
        time.sleep(0.5)
    pytest.fail(
        f"no recovery line in the daemon's log after {HEALTHY_WITHIN_S} s:\n{container.logs().decode()}"
    )


def test_with_the_sockets_group_it_starts_the_model_container_and_without_it_says_why(
    docker_engine: docker.DockerClient,
    image: str,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
    tmp_path: Path,
) -> None:
    if stat.S_IMODE(engine_socket().stat().st_mode) & 0o006:
        pytest.fail(f"{engine_socket()} is open to everyone: the permission check would mean nothing")
    config, member = drill_config(tmp_path, free_port)
    port = free_port()
    denied = run_beside_containers(docker_engine, image, container_name(), config, port, group=False)
    try:
        logs = wait_for_recovery(denied)
        assert "Docker engine not reachable at unix:///var/run/docker.sock" in logs
        assert "Permission denied" in logs
    finally:
        denied.remove(force=True, v=True)

    allowed = run_beside_containers(docker_engine, image, container_name(), config, port, group=True)
    try:
        logs = wait_for_recovery(allowed)
        assert "first start: applied 'small'" in logs, logs
        status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=10).json()
        assert status["active_stack"] == "small"
        started = docker_engine.containers.get(member)
        assert started.status == "running"
        assert started.labels["stackd.managed"] == "true"
        assert started.labels["stackd.model"] == "orchestrator"
    finally:
        allowed.remove(force=True, v=True)
        with contextlib.suppress(NotFound):
            docker_engine.containers.get(member).remove(force=True)
