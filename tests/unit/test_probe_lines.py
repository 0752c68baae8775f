"""An engine's log tail without stackd's own health probes: one predicate
(``stackd.drivers.probe_lines``) behind every tail stackd shows - the process driver's (``stackd
status``, the status page, the last lines an engine failure quotes) and ``GET
/members/{name}/logs`` (``stackd logs``), a tail and a follow alike."""

from __future__ import annotations

from pathlib import Path

from stackd.api.member_logs import follow_file, tail_lines
from stackd.drivers.probe_lines import is_probe_line, without_probes
from stackd.drivers.process import LocalProcessDriver
from stackd.drivers.process_logs import START_MARKER
from stackd.roles import LiveEndpoints
from stackd.state.processes import ProcessTable

# As each engine logs a probe it answered (llama-cpp-python and vLLM run uvicorn; llama.cpp's own
# server; Ollama's gin).
PROBES = [
    'INFO:     127.0.0.1:40490 - "GET /v1/models HTTP/1.1" 200 OK',
    "srv  log_server_r: request: GET /v1/models 127.0.0.1 200",
    '[GIN] 2026/12/01 - 10:00:00 | 200 |     512.3µs |       127.0.0.1 | GET      "/api/tags"',
    'INFO:     127.0.0.1:40494 - "GET /health HTTP/1.1" 200 OK',
]
KEPT = [
    'INFO:     127.0.0.1:40491 - "GET /v1/models HTTP/1.1" 503 Service Unavailable',  # a failing probe is news
    'INFO:     127.0.0.1:40492 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    "llama_model_loader: loaded meta data with 33 key-value pairs",
    "Traceback (most recent call last):",
]


def engine_log(lines_between: int = 30) -> str:
    """A quiet engine's log: each real line buried under rounds of probes."""
    out = [START_MARKER + "2026-12-01T10:00:00 llama_cpp.server"]
    for line in KEPT:
        out += PROBES * lines_between
        out.append(line)
    out += PROBES * lines_between
    return "\n".join(out) + "\n"


def test_answered_probes_are_probes_and_everything_else_is_not() -> None:
    assert [line for line in PROBES if not is_probe_line(line)] == []
    assert [line for line in KEPT if is_probe_line(line)] == []
    assert without_probes(["", *PROBES, *KEPT, *PROBES], 3) == KEPT[1:]


def test_the_process_driver_s_tail_behind_status_has_no_probes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    (state / "logs" / "smollm2-135m.log").write_text(engine_log(), encoding="utf-8")
    driver = LocalProcessDriver(state, ProcessTable(tmp_path / "stackd.db"), LiveEndpoints())
    # 4 real lines among 484: the tail of 10 (what /status shows) holds all four, nothing else.
    assert driver.log_tail("smollm2-135m", 10) == KEPT
    assert driver.log_tail("smollm2-135m", 2) == KEPT[2:]


def test_the_logs_route_s_tail_and_follow_leave_out_probes_unless_asked(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text(engine_log(lines_between=3000), encoding="utf-8")  # ~1 MB of probes between lines
    assert tail_lines(log, 3, drop=is_probe_line) == KEPT[1:]  # reads back past the probes
    assert tail_lines(log, 3) == PROBES[1:]  # ?probes=true: the file as it is


async def test_a_followed_log_drops_the_probes_it_is_appended(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text("loaded\n" + PROBES[0] + "\n", encoding="utf-8")

    async def append(_s: float) -> None:
        with log.open("a", encoding="utf-8") as f:
            f.write("\n".join([*PROBES, KEPT[1], *PROBES]) + "\n")

    lines = follow_file(log, 5, poll_s=0, sleep=append, drop=is_probe_line)
    assert [await anext(lines), await anext(lines)] == ["loaded", KEPT[1]]
    await lines.aclose()  # type: ignore[attr-defined]
