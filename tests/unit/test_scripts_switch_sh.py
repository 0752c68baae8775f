"""scripts/switch-stack.sh against a tiny stand-in of the daemon's control API on loopback.

The stand-in answers as stackd does (a switch's JSON with its ``state``, errors as
``{"error": NAME, "message": SENTENCE}``, 401 without the right bearer token) and records every
request, so each test states what the script sent and what a person or a machine reads back.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "switch-stack.sh"
TOKEN = "s3cret-token"
VALID = ["local-only", "elastic-hybrid", 'a"b']

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("curl") is None, reason="needs bash and curl"
)


def switch_answer(stack: str, state: str, error: str | None = None) -> dict[str, Any]:
    """A finished switch as ``POST /model-stacks/switch`` with ``wait: true`` returns it."""
    return {
        "switch_id": "sw-1",
        "kind": "switch",
        "stack": stack,
        "from_stack": "local-only",
        "state": state,
        "error": error,
        "note": None,
        "steps_done": [
            {"kind": "start_container", "model": "vision", "container": "aether-vision"},
            {"kind": "roles_swapped", "version": 3},
        ],
        "failed_step": None,
        "undone": [],
        "degraded": [],
        "events": [],
        "started_at": 1000.0,
        "finished_at": 1004.5,
    }


ROLLED_BACK = (
    "pull_model coder (qwen2.5-coder:7b) failed: ollama refused the pull; "
    "undone: start_container vision (aether-vision); 'local-only' is running as before"
)


@dataclass
class FakeStackd:
    """The control API's answers, one per stack name; unknown names get stackd's 404.

    ``requests`` records every request but ``GET /healthz``, which the script may send first to
    learn the daemon's state dir."""

    url: str = ""
    state_dir: str | None = None  # what GET /healthz names as the daemon's state dir
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        if path == "/healthz":
            return 200, {"status": "ok", "state_dir": self.state_dir}
        self.requests.append({"method": method, "path": path, "headers": headers, "raw": raw})
        if method == "GET" and path == "/model-stacks":
            stacks = [
                {"name": n, "description": f"the {n} stack", "active": n == "local-only"} for n in VALID
            ]
            return 200, {"active": "local-only", "default": "local-only", "stacks": stacks}
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {
                "error": "Unauthorized",
                "message": "missing or wrong bearer token; send 'Authorization: Bearer TOKEN' "
                "(the token is in $STACKD_TOKEN or the state dir's 'token' file)",
            }
        body = json.loads(raw)
        if body.get("dry_run"):
            return self.answers.get(f"dry:{body['stack']}", (500, {}))
        if body["stack"] not in self.answers:
            return 404, {
                "error": "NotFound",
                "message": f"unknown stack '{body['stack']}'; valid stacks: {', '.join(VALID)}",
                "valid": VALID,
            }
        return self.answers[body["stack"]]

    @property
    def last_body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1]["raw"])


@pytest.fixture
def stackd() -> Iterator[FakeStackd]:
    fake = FakeStackd()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = fake.answer(self.command, self.path, headers, raw)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free loopback port
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A user with the daemon's token in STACKD_TOKEN and nothing else of stackd's set."""
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "STACKD_TOKEN": TOKEN}


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_a_quote_in_the_stack_name_is_sent_as_valid_json(stackd: FakeStackd, env: dict[str, str]) -> None:
    stackd.answers['a"b'] = (200, switch_answer('a"b', "succeeded"))

    result = run_script("--url", stackd.url, 'a"b', env=env)

    assert result.returncode == 0, result.stderr
    request = stackd.requests[-1]
    assert (request["method"], request["path"]) == ("POST", "/model-stacks/switch")
    assert request["headers"]["content-type"] == "application/json"
    assert stackd.last_body == {"stack": 'a"b', "dry_run": False, "wait": True}


def test_a_succeeded_switch_reads_as_stack_state_steps_and_duration(
    stackd: FakeStackd, env: dict[str, str]
) -> None:
    stackd.answers["elastic-hybrid"] = (200, switch_answer("elastic-hybrid", "succeeded"))

    result = run_script("--url", stackd.url, "elastic-hybrid", env=env)

    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "stack 'elastic-hybrid' (from 'local-only'): succeeded, 2 steps done in 4.5 s"
    assert lines[1:] == ["  start_container vision (aether-vision)", "  role table swap"]
    assert result.stderr == ""


@pytest.mark.parametrize("state", ["rolled_back", "failed"])
def test_a_switch_that_did_not_succeed_exits_1_with_the_servers_sentence(
    stackd: FakeStackd, env: dict[str, str], state: str
) -> None:
    stackd.answers["elastic-hybrid"] = (200, switch_answer("elastic-hybrid", state, ROLLED_BACK))

    result = run_script("--url", stackd.url, "elastic-hybrid", env=env)

    assert result.returncode == 1
    assert f"stack 'elastic-hybrid' (from 'local-only'): {state}" in result.stdout
    assert result.stderr.strip() == f"error: switch to 'elastic-hybrid' {state}: {ROLLED_BACK}"


def test_an_unknown_stack_prints_the_status_and_the_valid_stacks(
    stackd: FakeStackd, env: dict[str, str]
) -> None:
    result = run_script("--url", stackd.url, "nope", env=env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"error: HTTP 404 from {stackd.url}: unknown stack 'nope'; valid stacks: local-only, elastic-hybrid, a\"b"
    )


def test_a_refused_token_names_the_servers_message_and_where_the_token_came_from(
    stackd: FakeStackd, env: dict[str, str]
) -> None:
    env["STACKD_TOKEN"] = "stale"

    result = run_script("--url", stackd.url, "elastic-hybrid", env=env)

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: HTTP 401 from {stackd.url}: missing or wrong bearer token")
    assert "the token was read from $STACKD_TOKEN" in result.stderr
    assert stackd.requests[-1]["headers"]["authorization"] == "Bearer stale"


def test_without_stackd_token_the_state_dirs_token_file_is_used(
    stackd: FakeStackd, env: dict[str, str], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "token").write_text(TOKEN + "\n")
    del env["STACKD_TOKEN"]
    env["STACKD_STATE_DIR"] = str(state)
    env["STACKD_URL"] = stackd.url
    stackd.answers["elastic-hybrid"] = (200, switch_answer("elastic-hybrid", "succeeded"))

    result = run_script("elastic-hybrid", env=env)

    assert result.returncode == 0, result.stderr
    assert stackd.requests[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_without_any_setting_the_token_of_the_state_dir_the_daemon_names_is_used(
    stackd: FakeStackd, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "demo-state").mkdir()
    (tmp_path / "demo-state" / "token").write_text(TOKEN + "\n")
    stackd.state_dir = str(tmp_path / "demo-state")  # a daemon started with --state-dir
    del env["STACKD_TOKEN"]
    stackd.answers["elastic-hybrid"] = (200, switch_answer("elastic-hybrid", "succeeded"))

    result = run_script("--url", stackd.url, "elastic-hybrid", env=env)

    assert result.returncode == 0, result.stderr
    assert stackd.requests[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_with_no_token_anywhere_a_401_says_where_to_put_one(
    stackd: FakeStackd, env: dict[str, str], tmp_path: Path
) -> None:
    del env["STACKD_TOKEN"]

    result = run_script("--url", stackd.url, "elastic-hybrid", env=env)

    assert result.returncode == 1
    assert "authorization" not in stackd.requests[-1]["headers"]
    assert "the token was read from nowhere: set STACKD_TOKEN or STACKD_STATE_DIR" in result.stderr
    assert str(tmp_path / ".local" / "state" / "stackd") in result.stderr


@pytest.mark.parametrize(("state", "code"), [("succeeded", 0), ("rolled_back", 1)])
def test_json_prints_the_raw_answer_for_machines(
    stackd: FakeStackd, env: dict[str, str], state: str, code: int
) -> None:
    answer = switch_answer("elastic-hybrid", state, None if state == "succeeded" else ROLLED_BACK)
    stackd.answers["elastic-hybrid"] = (200, answer)

    result = run_script("--json", "--url", stackd.url, "elastic-hybrid", env=env)

    assert result.returncode == code
    assert json.loads(result.stdout) == answer


def test_json_of_an_http_error_is_the_servers_error_body(stackd: FakeStackd, env: dict[str, str]) -> None:
    result = run_script("--json", f"--url={stackd.url}", "nope", env=env)

    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "NotFound"
    assert "HTTP 404" in result.stderr


def test_dry_run_sends_dry_run_and_lists_the_plans_steps(stackd: FakeStackd, env: dict[str, str]) -> None:
    steps = [
        {"kind": "stop_container", "model": "coder", "container": "aether-coder"},
        {"kind": "bind_role", "role": "vision", "model": "vision"},
    ]
    plan = {"stack": "elastic-hybrid", "feasible": True, "refusals": [], "steps": steps}
    stackd.answers["dry:elastic-hybrid"] = (200, {"stack": "elastic-hybrid", "dry_run": True, "plan": plan})

    result = run_script("--url", stackd.url, "elastic-hybrid", "--dry-run", env=env)

    assert result.returncode == 0, result.stderr
    assert stackd.last_body == {"stack": "elastic-hybrid", "dry_run": True, "wait": True}
    assert result.stdout.splitlines() == [
        "dry run of 'elastic-hybrid': feasible, 2 steps (nothing was changed)",
        "  1. stop_container coder (aether-coder)",
        "  2. bind_role vision -> vision",
    ]


def test_a_dry_run_whose_plan_does_not_fit_exits_1_with_the_refusal(
    stackd: FakeStackd, env: dict[str, str]
) -> None:
    refusal = "coder needs 20.0 GiB; 12.0 GiB free (vision holds 18.0 GiB)"
    plan = {
        "stack": "big",
        "feasible": False,
        "steps": [],
        "refusals": [{"code": "vram", "message": refusal}],
    }
    stackd.answers["dry:big"] = (200, {"stack": "big", "dry_run": True, "plan": plan})

    result = run_script("--url", stackd.url, "--dry-run", "big", env=env)

    assert result.returncode == 1
    assert result.stderr.strip() == f"error: switching to 'big' would be refused: {refusal}"


def test_an_unreachable_daemon_is_one_clear_line(env: dict[str, str]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        stackd_gone = f"http://127.0.0.1:{s.getsockname()[1]}"

    result = run_script("--url", stackd_gone, "elastic-hybrid", env=env)

    assert result.returncode == 1
    assert result.stderr == (
        f"error: no stackd daemon at {stackd_gone}; start it with 'stackd serve' or set STACKD_URL\n"
    )


def test_list_marks_the_active_stack(stackd: FakeStackd, env: dict[str, str]) -> None:
    result = run_script("--url", stackd.url, "--list", env=env)

    assert result.returncode == 0
    assert result.stdout.splitlines()[:2] == [
        "* local-only      the local-only stack",
        "  elastic-hybrid  the elastic-hybrid stack",
    ]


@pytest.mark.parametrize("args", [[], ["--bogus"], ["one", "two"], ["--url"]])
def test_a_usage_error_exits_2_without_a_request(
    stackd: FakeStackd, env: dict[str, str], args: list[str]
) -> None:
    env["STACKD_URL"] = stackd.url

    result = run_script(*args, env=env)

    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert stackd.requests == []
