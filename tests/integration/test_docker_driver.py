"""The Docker driver against a real engine and containers of ``stackd-demo:latest``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from stackd.config.loader import load_config
from stackd.config.models import Model
from stackd.drivers.docker import DockerContainerDriver
from stackd.drivers.docker_spec import MANAGED_LABEL, MODEL_LABEL
from stackd.drivers.health import health_url
from stackd.errors import DriverFailed, DriverUnavailable

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]

WGET_HEALTH = ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8000/health"]


def demo_model(
    container: str,
    port: int,
    *,
    image: str = "stackd-demo:latest",
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    healthcheck: list[str] | None = None,
    gpu: bool = False,
    start_timeout_s: float = 20,
    stop_timeout_s: int = 5,
    with_spec: bool = True,
) -> Model:
    spec = {
        "image": image,
        "ports": {"8000/tcp": port},
        "env": env or {},
        "command": command,
        "healthcheck": healthcheck,
        "gpu": gpu,
        "labels": {"purpose": "stackd-test"},
    }
    runtime: dict[str, Any] = {"container": container, "stop_timeout_s": stop_timeout_s}
    if with_spec:
        runtime["spec"] = spec
    return Model.model_validate(
        {
            "runtime": "docker",
            "placement": "gpu",
            "api": "openai",
            "endpoint": f"http://127.0.0.1:{port}/v1",
            "health": {"path": "/health", "timeout_s": 1, "start_timeout_s": start_timeout_s},
            "docker": runtime,
        }
    )


async def http_status(url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession() as session, session.get(url, timeout=timeout) as resp:
        return resp.status


class NeverHealthy:
    """A HealthChecker that always fails: proves readiness came from Docker's HEALTHCHECK."""

    def __init__(self) -> None:
        self.calls = 0

    async def check(self, name: str, model: Model) -> None:
        self.calls += 1
        raise DriverUnavailable(f"{name} is never healthy here")


@pytest.fixture
async def driver(docker_engine: docker.DockerClient, demo_image: str) -> AsyncIterator[DockerContainerDriver]:
    made = DockerContainerDriver()
    yield made
    await made.aclose()


def inspect(engine: docker.DockerClient, name: str) -> dict[str, Any]:
    attrs: dict[str, Any] = engine.api.inspect_container(name)
    return attrs


async def test_creates_from_spec_and_waits_for_http_health_on_loopback(
    driver: DockerContainerDriver,
    docker_engine: docker.DockerClient,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    name, port = container_name(), free_port()
    model = demo_model(name, port, env={"STARTUP_DELAY_S": "2"})

    await driver.ensure_running("orchestrator", model)

    # Ready means the server answers now, although it waited 2 s before listening.
    assert await http_status(f"http://127.0.0.1:{port}/health") == 200
    attrs = inspect(docker_engine, name)
    assert attrs["State"]["Status"] == "running"
    labels = attrs["Config"]["Labels"]
    assert labels["stackd.managed"] == "true"
    assert labels["stackd.model"] == "orchestrator"
    assert labels["purpose"] == "stackd-test"
    loopback_only = {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert attrs["HostConfig"]["PortBindings"] == loopback_only
    assert "STARTUP_DELAY_S=2" in attrs["Config"]["Env"]


async def test_ready_comes_from_docker_healthcheck_when_the_container_has_one(
    docker_engine: docker.DockerClient,
    demo_image: str,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    checker = NeverHealthy()
    driver = DockerContainerDriver(health=checker)
    name = container_name()
    model = demo_model(name, free_port(), env={"STARTUP_DELAY_S": "1"}, healthcheck=WGET_HEALTH)

    await driver.ensure_running("embeddings", model)

    assert inspect(docker_engine, name)["State"]["Health"]["Status"] == "healthy"
    assert checker.calls == 0
    await driver.aclose()


async def test_stop_waits_for_the_grace_period_then_kills(
    driver: DockerContainerDriver,
    docker_engine: docker.DockerClient,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    ignore_sigterm = "trap '' TERM; echo ok >/www/health; httpd -f -p 8000 -h /www"
    stubborn = demo_model(
        container_name(), free_port(), command=["sh", "-c", ignore_sigterm], stop_timeout_s=2
    )
    polite = demo_model(container_name(), free_port(), stop_timeout_s=10)
    await driver.ensure_running("stubborn", stubborn)
    await driver.ensure_running("polite", polite)

    started = time.monotonic()
    await driver.ensure_stopped("stubborn", stubborn)
    stubborn_s = time.monotonic() - started
    started = time.monotonic()
    await driver.ensure_stopped("polite", polite)
    polite_s = time.monotonic() - started

    assert 2 <= stubborn_s < 8, "SIGTERM ignored: killed after the 2 s grace"
    assert polite_s < 5, "a server that honours SIGTERM stops before its 10 s grace"
    assert inspect(docker_engine, stubborn.docker.container)["State"]["ExitCode"] == 137  # type: ignore[union-attr]
    assert inspect(docker_engine, polite.docker.container)["State"]["Status"] == "exited"  # type: ignore[union-attr]


async def test_ensure_running_and_ensure_stopped_are_idempotent(
    driver: DockerContainerDriver,
    docker_engine: docker.DockerClient,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    name, port = container_name(), free_port()
    model = demo_model(name, port)

    await driver.ensure_stopped("m", model)  # missing: nothing to do
    await driver.ensure_running("m", model)
    first = inspect(docker_engine, name)
    await driver.ensure_running("m", model)
    again = inspect(docker_engine, name)
    assert again["Id"] == first["Id"]
    assert again["State"]["StartedAt"] == first["State"]["StartedAt"], "a running container is not restarted"

    await driver.ensure_stopped("m", model)
    await driver.ensure_stopped("m", model)
    assert inspect(docker_engine, name)["State"]["Status"] == "exited"

    await driver.ensure_running("m", model)  # restart of the stopped container, same spec: same container
    assert inspect(docker_engine, name)["Id"] == first["Id"]
    assert await http_status(f"http://127.0.0.1:{port}/health") == 200


async def test_running_reflects_what_the_engine_runs(
    driver: DockerContainerDriver,
    docker_engine: docker.DockerClient,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    models = {
        "a": demo_model(container_name(), free_port()),
        "b": demo_model(container_name(), free_port()),
        "never-created": demo_model(container_name(), free_port()),
    }
    assert await driver.running(models) == frozenset()

    await driver.ensure_running("a", models["a"])
    await driver.ensure_running("b", models["b"])
    assert await driver.running(models) == {"a", "b"}

    docker_engine.containers.get(models["b"].docker.container).kill()  # type: ignore[union-attr]
    assert await driver.running(models) == {"a"}

    for name in ("a", "b"):  # stopped or not, each container says which model it serves
        labels = docker_engine.containers.get(models[name].docker.container).labels  # type: ignore[union-attr]
        assert labels[MANAGED_LABEL] == "true" and labels[MODEL_LABEL] == name


async def test_containers_the_config_does_not_declare_are_never_touched(
    driver: DockerContainerDriver,
    docker_engine: docker.DockerClient,
    demo_image: str,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    # A foreign container, even one carrying stackd's labels, started by hand.
    foreign = docker_engine.containers.run(
        demo_image,
        name=container_name(),
        detach=True,
        labels={"stackd.managed": "true", "stackd.model": "orchestrator"},
    )
    # A declared name that Docker would resolve to the foreign container's ID prefix.
    by_prefix = demo_model(foreign.id[:12], free_port(), with_spec=False)
    declared = demo_model(container_name(), free_port())

    await driver.ensure_running("orchestrator", declared)
    await driver.ensure_stopped("orchestrator", declared)
    await driver.ensure_stopped("prefix", by_prefix)
    assert await driver.running({"prefix": by_prefix}) == frozenset()
    with pytest.raises(DriverFailed, match=r"does not exist and the config gives no docker\.spec"):
        await driver.ensure_running("prefix", by_prefix)

    foreign.reload()
    assert foreign.status == "running"


async def test_missing_image_is_a_clear_driver_failure(
    driver: DockerContainerDriver,
    docker_engine: docker.DockerClient,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    name = container_name()
    model = demo_model(name, free_port(), image="stackd-test-missing:nope")

    with pytest.raises(DriverFailed, match=r"image 'stackd-test-missing:nope' not found locally; build"):
        await driver.ensure_running("m", model)
    assert not docker_engine.containers.list(all=True, filters={"name": name})


@pytest.mark.parametrize("docker_healthcheck", [False, True], ids=["http-health", "docker-healthcheck"])
async def test_failing_health_fails_within_the_start_timeout(
    driver: DockerContainerDriver,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
    docker_healthcheck: bool,
) -> None:
    model = demo_model(
        container_name(),
        free_port(),
        env={"FAIL_HEALTH": "1"},
        start_timeout_s=3,
        healthcheck=WGET_HEALTH if docker_healthcheck else None,
    )

    started = time.monotonic()
    with pytest.raises(DriverFailed) as failure:
        await driver.ensure_running("vision", model)
    elapsed = time.monotonic() - started

    assert 3 <= elapsed < 8
    message = str(failure.value)
    assert "was not ready within 3 s" in message
    assert ("Docker health status is" if docker_healthcheck else "answered HTTP 404") in message
    assert "FAIL_HEALTH=1" in message, "the container's last log lines are in the error"


async def test_a_container_that_exits_while_starting_fails_fast_with_its_logs(
    driver: DockerContainerDriver,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    model = demo_model(
        container_name(),
        free_port(),
        command=["sh", "-c", "echo 'CUDA out of memory'; exit 3"],
        start_timeout_s=60,
    )

    started = time.monotonic()
    with pytest.raises(DriverFailed, match=r"(?s)exited with code 3 while starting.*CUDA out of memory"):
        await driver.ensure_running("orchestrator", model)
    assert time.monotonic() - started < 10


async def test_a_stopped_managed_container_with_an_edited_spec_is_recreated(
    driver: DockerContainerDriver,
    docker_engine: docker.DockerClient,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    name, port = container_name(), free_port()
    await driver.ensure_running("m", demo_model(name, port, env={"MODEL_NAME": "old"}))
    old_id = inspect(docker_engine, name)["Id"]
    edited = demo_model(name, port, env={"MODEL_NAME": "new"})

    await driver.ensure_running("m", edited)  # running: left alone, no surprise restart
    assert inspect(docker_engine, name)["Id"] == old_id

    await driver.ensure_stopped("m", edited)
    await driver.ensure_running("m", edited)
    attrs = inspect(docker_engine, name)
    assert attrs["Id"] != old_id
    assert "MODEL_NAME=new" in attrs["Config"]["Env"]


async def test_gpu_spec_requests_the_configured_device(
    docker_engine: docker.DockerClient,
    demo_image: str,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    driver = DockerContainerDriver(gpu_device=1)
    name = container_name()
    model = demo_model(name, free_port(), gpu=True, start_timeout_s=5)

    # Without the NVIDIA runtime the engine refuses to start it; that must be a DriverFailed.
    with contextlib.suppress(DriverFailed):
        await driver.ensure_running("orchestrator", model)

    requests = inspect(docker_engine, name)["HostConfig"]["DeviceRequests"]
    assert [(r["DeviceIDs"], r["Capabilities"]) for r in requests] == [(["1"], [["gpu"]])]
    await driver.aclose()


async def test_unreachable_engine_is_driver_unavailable_naming_docker_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    driver = DockerContainerDriver()
    model = demo_model("stackd-test-unreachable", 18999)

    calls = [
        lambda: driver.running({"m": model}),
        lambda: driver.ensure_running("m", model),
        lambda: driver.ensure_stopped("m", model),
    ]
    for call in calls:
        with pytest.raises(DriverUnavailable) as failure:
            await asyncio.wait_for(call(), timeout=30)
        message = str(failure.value)
        assert "Docker engine not reachable at unix:///nonexistent/docker.sock (DOCKER_HOST)" in message
        assert "start dockerd" in message


async def test_every_docker_member_of_the_demo_config_starts_and_gets_ready(
    driver: DockerContainerDriver,
    docker_engine: docker.DockerClient,
    container_name: Callable[[], str],
    free_port: Callable[[], int],
) -> None:
    config = load_config(REPO / "config" / "examples" / "demo.yaml", env={})
    docker_members = {name: m for name, m in config.models.items() if m.docker is not None}
    # The orchestrator is an engine process (runtime: process), not a container.
    assert set(docker_members) == {"embeddings-nomic", "vision-qwen25vl", "comfyui-flux"}

    for name, demo in docker_members.items():
        # The demo's own spec, under a test name and a free port so that a running demo is not disturbed.
        model = on_test_container(demo, container_name(), free_port())
        await driver.ensure_running(name, model)
        assert await driver.running({name: model}) == {name}
        assert await http_status(health_url(model)) == 200
        await driver.ensure_stopped(name, model)


def on_test_container(model: Model, container: str, port: int) -> Model:
    assert model.docker is not None and model.docker.spec is not None
    spec = model.docker.spec.model_copy(update={"ports": {"8000/tcp": port}})
    runtime = model.docker.model_copy(update={"container": container, "spec": spec})
    return model.model_copy(update={"endpoint": f"http://127.0.0.1:{port}/v1", "docker": runtime})
