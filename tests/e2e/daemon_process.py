"""A ``stackd serve`` process on a demo world: start, switch, follow a switch's events, kill, restart.

Built on ``tests.e2e.conftest.start_daemon``; each start keeps the previous run's log as
``daemon-<n>.log`` so a failing test shows what every run of the daemon said.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Daemon, start_daemon
from tests.integration.demo_world import DemoWorld

Event = dict[str, Any]
FOLLOW_TIMEOUT_S = 60.0


def start_demo_daemon(world: DemoWorld, tmp: Path, run: int) -> Daemon:
    """Start (or restart: the state dir is ``tmp/state`` every time) the daemon of ``world``."""
    log = tmp / "daemon.log"
    if log.exists():
        log.rename(tmp / f"daemon-{run - 1}.log")
    return start_daemon(tmp, "--no-periodic", config=str(world.path), env_extra=world.env())


def auth(daemon: Daemon) -> dict[str, str]:
    return {"Authorization": f"Bearer {daemon.token}"}


def get(daemon: Daemon, path: str) -> Any:
    answer = httpx.get(f"{daemon.url}{path}", timeout=10)
    answer.raise_for_status()
    return answer.json()


def submit_switch(daemon: Daemon, stack: str) -> str:
    """Start a switch without waiting for it; returns its id."""
    answer = httpx.post(
        f"{daemon.url}/model-stacks/switch",
        json={"stack": stack, "wait": False},
        headers=auth(daemon),
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    switch_id: str = answer.json()["switch_id"]
    return switch_id


def switch(daemon: Daemon, stack: str) -> dict[str, Any]:
    """Switch and wait for the end; returns the switch as the API shows it."""
    answer = httpx.post(
        f"{daemon.url}/model-stacks/switch", json={"stack": stack}, headers=auth(daemon), timeout=120
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def events(daemon: Daemon, switch_id: str) -> Iterator[Event]:
    """The switch's SSE stream, event by event, until it ends."""
    url = f"{daemon.url}/model-stacks/switch/{switch_id}/events"
    with httpx.stream("GET", url, timeout=FOLLOW_TIMEOUT_S) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[len("data: ") :])


def follow_until(daemon: Daemon, switch_id: str, wanted: Callable[[Event], bool]) -> Event:
    """The first event of the switch that ``wanted`` accepts; fails if the switch ends first."""
    seen: list[str] = []
    for event in events(daemon, switch_id):
        if wanted(event):
            return event
        seen.append(event["type"])
        if event["type"] == "finished":
            break
    raise AssertionError(f"switch {switch_id} ended before the kill point; events: {seen}")


def kill(daemon: Daemon) -> None:
    """SIGKILL: no shutdown code of the daemon runs."""
    daemon.proc.kill()
    daemon.proc.wait(10)
