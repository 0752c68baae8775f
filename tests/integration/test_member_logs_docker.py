"""A docker member's log through ``DockerLogs`` against a real engine: the tail, a follow that
gives new lines as the container writes them and ends its thread when closed, and the errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import docker
import pytest

from stackd.drivers.docker_logs import DockerLogs, NoSuchContainer
from stackd.errors import DriverUnavailable

pytestmark = pytest.mark.docker

TALKER = (
    "for i in 1 2 3; do echo line-$i; done; i=0; while true; i=$((i+1)); do echo tick-$i; sleep 0.2; done"
)


def start_talker(engine: docker.DockerClient, image: str, name: str) -> None:
    engine.containers.run(
        image, ["sh", "-c", TALKER], name=name, detach=True, labels={"purpose": "stackd-test"}
    )


async def test_the_tail_is_the_container_s_last_lines(
    docker_engine: docker.DockerClient, demo_image: str, container_name: Callable[[], str]
) -> None:
    name = container_name()
    start_talker(docker_engine, demo_image, name)
    logs = DockerLogs()
    for _ in range(50):  # the container writes its first lines within a moment
        lines = await logs.log_lines(name, 100)
        if "line-3" in lines:
            break
        await asyncio.sleep(0.1)
    assert lines[:3] == ["line-1", "line-2", "line-3"]
    assert await logs.log_lines(name, 1) != [] and len(await logs.log_lines(name, 2)) == 2


async def test_a_follow_gives_new_lines_and_its_thread_ends_when_it_is_closed(
    docker_engine: docker.DockerClient, demo_image: str, container_name: Callable[[], str]
) -> None:
    name = container_name()
    start_talker(docker_engine, demo_image, name)
    before = {t.name for t in threading.enumerate()}
    stream = await DockerLogs().follow_log(name, 100)
    seen = [await asyncio.wait_for(anext(stream), 10) for _ in range(6)]
    assert seen[:3] == ["line-1", "line-2", "line-3"] and seen[3:] == ["tick-1", "tick-2", "tick-3"]
    assert f"logs-{name}" in {t.name for t in threading.enumerate()} - before
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(50):
        if f"logs-{name}" not in {t.name for t in threading.enumerate()}:
            break
        await asyncio.sleep(0.1)
    assert f"logs-{name}" not in {t.name for t in threading.enumerate()}


async def test_no_container_and_no_engine_are_errors_that_say_so(docker_engine: docker.DockerClient) -> None:
    with pytest.raises(NoSuchContainer, match="container 'stackd-test-none' does not exist"):
        await DockerLogs().log_lines("stackd-test-none", 10)
    with pytest.raises(NoSuchContainer):  # a follow is refused when opened, before any answer
        await DockerLogs().follow_log("stackd-test-none", 10)

    def unreachable() -> docker.DockerClient:
        return docker.DockerClient(base_url="unix:///nonexistent/docker.sock")

    with pytest.raises(DriverUnavailable, match=r"Docker engine not reachable .* set DOCKER_HOST"):
        await DockerLogs(unreachable).log_lines("anything", 10)
