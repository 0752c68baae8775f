"""Fixtures of the integration tests that drive a real Docker engine.

``docker_engine`` talks to the engine at DOCKER_HOST (start one with
``eval "$(scripts/dockerd-test start)"``). Without an engine the tests that use it skip on a
developer machine and fail in CI (``CI=true``), so CI can never pass them silently.

Every container a test makes is named ``stackd-test-<random>`` (``container_name``) and removed
at teardown, whatever the test did to it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException, NotFound

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = "stackd-demo:latest"
TEST_PREFIX = "stackd-test-"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    """A client of the engine at DOCKER_HOST; skips without one, except in CI where it fails."""
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "(unset: the default socket)")
        reason = (
            f"no Docker engine at DOCKER_HOST={where}: {exc}; "
            'start one with: eval "$(scripts/dockerd-test start)"'
        )
        if in_ci():
            pytest.fail(f"CI=true requires a Docker engine; {reason}")
        pytest.skip(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def demo_image(docker_engine: docker.DockerClient) -> str:
    """``stackd-demo:latest``, built by ``scripts/build-demo-image`` (a no-op when up to date)."""
    script = REPO / "scripts" / "build-demo-image"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"scripts/build-demo-image failed ({done.returncode}): {done.stderr.strip()}")
    docker_engine.images.get(DEMO_IMAGE)
    return DEMO_IMAGE


@pytest.fixture
def container_name(docker_engine: docker.DockerClient) -> Iterator[Callable[[], str]]:
    """Makes unique ``stackd-test-`` names; the containers of those names are removed afterwards."""
    made: list[str] = []

    def new() -> str:
        name = f"{TEST_PREFIX}{uuid.uuid4().hex[:12]}"
        made.append(name)
        return name

    yield new
    for name in made:
        with contextlib.suppress(NotFound):
            docker_engine.containers.get(name).remove(force=True)


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""

    def pick() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port

    return pick
