"""``GET /members/{name}/logs`` over the in-memory world and an engine log file on disk, and the
file follower it streams with ``follow=true`` (driven by a scripted sleep, no waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackd.api.app import create_app
from stackd.api.member_logs import Followers, follow_file, tail_lines
from stackd.settings import Settings
from tests.unit.test_manager_world import World, close_all, make_world

TOKEN = "logs-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENGINE = "smollm2-135m"  # a process member of the bundled config


class EngineLogs:
    """The one thing the route asks of the process driver: where an engine's log is."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def log_file(self, name: str) -> Path:
        return self.root / f"{name}.log"


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    world: World = make_world(tmp_path)
    manager = world.manager()
    await manager.recover()
    services = world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN)
    services.processes = EngineLogs(tmp_path / "logs")  # type: ignore[assignment]
    (tmp_path / "logs").mkdir()
    lines = ["---- stackd: start 2026-12-01T10:00:00 llama_cpp.server", "loading model", "", "listening"]
    (tmp_path / "logs" / f"{ENGINE}.log").write_text("\n".join(lines) + "\n")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)), base_url="http://stackd"
    ) as client:
        yield client
    await close_all(world)


async def test_a_process_member_s_tail_is_its_log_file_s_last_lines(http: httpx.AsyncClient) -> None:
    answer = await http.get(f"/members/{ENGINE}/logs", params={"lines": 2}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"member": ENGINE, "lines": ["loading model", "listening"]}
    whole = (await http.get(f"/members/{ENGINE}/logs", headers=AUTH)).json()["lines"]
    assert whole[0].startswith("---- stackd: start")  # every run is there, not only the last


async def test_the_tail_leaves_out_answered_health_probes_unless_asked(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    probe = 'INFO:     127.0.0.1:40490 - "GET /v1/models HTTP/1.1" 200 OK'
    with (tmp_path / "logs" / f"{ENGINE}.log").open("a") as log:
        log.write("\n".join([probe] * 50 + ["a chat answered"] + [probe] * 50) + "\n")
    quiet = await http.get(f"/members/{ENGINE}/logs", params={"lines": 2}, headers=AUTH)
    assert quiet.json()["lines"] == ["listening", "a chat answered"]
    raw = await http.get(f"/members/{ENGINE}/logs", params={"lines": 2, "probes": True}, headers=AUTH)
    assert raw.json()["lines"] == [probe, probe]


async def test_engine_logs_need_the_token_even_on_loopback(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = await http.get(f"/members/{ENGINE}/logs", headers=headers)
        assert answer.status_code == 401 and "loading model" not in answer.text


@pytest.mark.parametrize(
    ("member", "status", "says"),
    [
        ("nope", 404, "unknown member 'nope'; members: orchestrator-8b"),
        ("orchestrator-cpu", 404, "is a ollama member: stackd runs no engine for it; see Ollama's own log"),
    ],
)
async def test_what_has_no_engine_log_says_where_to_look(
    http: httpx.AsyncClient, member: str, status: int, says: str
) -> None:
    answer = await http.get(f"/members/{member}/logs", headers=AUTH)
    assert answer.status_code == status
    assert says in answer.json()["message"]


async def test_bad_lines_are_refused_with_the_bound(http: httpx.AsyncClient) -> None:
    answer = await http.get(f"/members/{ENGINE}/logs", params={"lines": 0}, headers=AUTH)
    assert answer.status_code == 422 and "lines" in answer.text


class Ticks:
    """``sleep`` for the follower: each poll runs the next scripted change of the file."""

    def __init__(self, *changes: Any) -> None:
        self.changes = list(changes)

    async def __call__(self, _s: float) -> None:
        if self.changes:
            self.changes.pop(0)()
        await asyncio.sleep(0)


async def take(lines: AsyncIterator[str], n: int) -> list[str]:
    return [await anext(lines) for _ in range(n)]


async def test_follow_gives_the_tail_then_appended_lines_and_a_cut_log_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text("one\ntwo\nthree\n")

    def append(text: str) -> Any:
        return lambda: log.open("a").write(text)

    def cut_and_write() -> None:  # cap_log: copied away, truncated in place, written again
        log.write_text("fresh start\n")

    ticks = Ticks(append("four\nfi"), append("ve\n"), lambda: None, cut_and_write, append("six\n"))
    lines = follow_file(log, 2, poll_s=0, sleep=ticks)
    assert await take(lines, 2) == ["two", "three"]
    assert await take(lines, 1) == ["four"]
    assert await take(lines, 1) == ["five"]  # a line is given once whole, not in halves
    assert await take(lines, 2) == ["fresh start", "six"]
    await lines.aclose()  # type: ignore[attr-defined]


async def test_closing_the_followers_ends_every_stream(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text("only line\n")
    followers = Followers()
    stream = followers.until_closed(follow_file(log, 10, poll_s=0.01))
    assert await anext(stream) == "only line"
    waiting = asyncio.ensure_future(anext(stream))  # nothing new: it waits
    await asyncio.sleep(0.05)
    assert not waiting.done()
    followers.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1)


def test_a_tail_reads_back_as_far_as_its_lines_need_and_no_further(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text("".join(f"line {i:05d} " + "x" * 90 + "\n" for i in range(30_000)))  # ~3 MB
    last = tail_lines(log, 10_000)
    assert len(last) == 10_000 and last[0].startswith("line 20000 ") and last[-1].startswith("line 29999 ")
    capped = tail_lines(log, 10_000, max_bytes=100_000)  # whole lines only, the cut one dropped
    assert 900 < len(capped) < 1000 and all(line.startswith("line ") for line in capped)
    assert tail_lines(tmp_path / "absent.log", 5) == []


async def test_a_daemon_without_a_container_log_reader_says_so(http: httpx.AsyncClient) -> None:
    answer = await http.get("/members/orchestrator-8b/logs", headers=AUTH)
    assert answer.status_code == 404
    assert "'orchestrator-8b' is a docker member, but this daemon reads no container logs" in answer.text
