"""No secret in any response, log line or stored row: canary keys through a real ``stackd serve``.

Every credential of the config is a canary (a value found nowhere else): the keys of three cloud
members (OpenAI, Anthropic and Gemini simulators that check them), and the passwords in the URLs
of two proxied members, one with a Bearer key beside (refused with a reason) and one without
(its credentials travel as Basic auth). The simulators then echo what they were sent, by every
path an upstream has: in a malformed body, in a malformed stream chunk, in the protocol's error
event (streamed, or in a 200 body), in an error body over 300 bytes with the key across byte
300, and in a plain 500 from the member whose URL has credentials. Each fault is met by plain
and streamed calls of the gateway and of ``/tools/reason``, twice: once as the circuit's trial
(the failure's text is in the answer's attempts, or in the stream's error event), once with the
circuits open (their ``last:`` reasons are in the attempts). A healthy backup answers each call.

Then every response body, the daemon's whole log (stdout and stderr: its logging, uvicorn's,
any traceback), every row of every table of ``stackd.db`` and the raw bytes of every file of the
state directory are searched for each canary, raw, base64 (Basic credentials) and
percent-encoded: 0 hits. The test also checks that the faults did happen (each protocol's
failure kinds are in the attempts), so that 0 hits means something.
"""

from __future__ import annotations

import base64
import itertools
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from stackd.sim import AnthropicSim, Fault, GeminiSim, OpenAISim
from stackd.sim.thread import SimThread
from tests.e2e.conftest import Daemon, start_daemon, stop_daemon

KEYS = {  # env var -> canary
    "CANARY_R1_KEY": "sk-canary-r1-5f1d2c0a",
    "CANARY_CLAUDE_KEY": "ant-canary-claude-8e2b61",
    "CANARY_GEMINI_KEY": "g-canary-gemini-3c9a77",
    "CANARY_PROXYKEY_KEY": "sk-canary-proxykey-44aa09",
}
PROXY_USERINFO = ("proxyuser", "pw-canary-proxy-71d0e5")
PROXYKEY_USERINFO = ("keyuser", "pw-canary-proxykey-9b3e12")
ECHO_FAULTS = [Fault.echo_key_malformed, Fault.echo_key_error_event, Fault.echo_key_long_error]
COOLDOWN_S = 0.3

CONFIG = """
default_stack: canary
roles:
  orchestrator: {{required: true}}
models:
  r1:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: {r1}/v1
    remote: {{api_key_env: CANARY_R1_KEY}}
  claude:
    runtime: remote
    placement: cloud
    api: anthropic
    endpoint: {claude}
    remote: {{api_key_env: CANARY_CLAUDE_KEY}}
  gemini:
    runtime: remote
    placement: cloud
    api: gemini
    endpoint: {gemini}/v1beta
    remote: {{api_key_env: CANARY_GEMINI_KEY}}
  proxied:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: http://{proxy_user}:{proxy_password}@{proxy}/v1
    remote: {{}}
  proxied-with-key:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: http://{proxykey_user}:{proxykey_password}@{proxy}/v1
    remote: {{api_key_env: CANARY_PROXYKEY_KEY}}
  backup:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: {backup}/v1
    remote: {{}}
stacks:
  canary:
    roles: {{orchestrator: backup}}
    members: [r1, claude, gemini, proxied, proxied-with-key]
  canary-b:
    roles: {{orchestrator: backup}}
    members: [r1, claude, gemini, proxied]
reason:
  strategies:
    cloud_r1: {{models: [r1]}}
    cloud_api: {{models: [claude, gemini]}}
    proxied: {{models: [proxied, proxied-with-key]}}
    local_scheduler: {{role: orchestrator}}
  default_chain: [cloud_r1, cloud_api, proxied, local_scheduler]
  timeouts: {{connect_s: 2, first_token_s: 5, total_s: 20}}
  circuit: {{failure_threshold: 1, cooldown_s: {cooldown}}}
"""


def canaries() -> dict[str, str]:
    """Every form a canary could leak in: raw, percent-encoded, Basic (base64 of user:password)."""
    forms: dict[str, str] = {}
    for name, value in [
        *KEYS.items(),
        ("proxy password", PROXY_USERINFO[1]),
        ("proxy-with-key password", PROXYKEY_USERINFO[1]),
    ]:
        forms[name] = value
        forms[f"{name} (percent-encoded)"] = quote(value, safe="")
    for name, (user, password) in [("proxy", PROXY_USERINFO), ("proxy-with-key", PROXYKEY_USERINFO)]:
        forms[f"{name} Basic credentials"] = base64.b64encode(f"{user}:{password}".encode()).decode()
    return forms


@dataclass
class World:
    daemon: Daemon
    sims: dict[str, SimThread]
    responses: list[str] = field(default_factory=list)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.daemon.token}"}

    def call(self, path: str, body: dict[str, object]) -> str:
        """POST and keep the whole response (status line, headers, body) as text."""
        with httpx.stream(
            "POST", f"{self.daemon.url}{path}", json=body, headers=self.auth(), timeout=30
        ) as r:
            text = r.read().decode()
            self.responses.append(f"{r.status_code} {dict(r.headers)}\n{text}")
        return text

    def get(self, path: str) -> str:
        r = httpx.get(f"{self.daemon.url}{path}", headers=self.auth(), timeout=30)
        self.responses.append(f"{r.status_code} {dict(r.headers)}\n{r.text}")
        return r.text


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sims = {
        "r1": OpenAISim.start_in_thread(),
        "claude": AnthropicSim.start_in_thread(),
        "gemini": GeminiSim.start_in_thread(),
        "proxy": OpenAISim.start_in_thread(),
        "backup": OpenAISim.start_in_thread(),
    }
    try:
        for name, env in [
            ("r1", "CANARY_R1_KEY"),
            ("claude", "CANARY_CLAUDE_KEY"),
            ("gemini", "CANARY_GEMINI_KEY"),
        ]:
            sims[name].control.require_api_key = KEYS[env]
        config = tmp_path / "stacks.yaml"
        config.write_text(
            CONFIG.format(
                **{name: sim.url for name, sim in sims.items() if name != "proxy"},
                proxy=sims["proxy"].url.removeprefix("http://"),
                proxy_user=PROXY_USERINFO[0],
                proxy_password=PROXY_USERINFO[1],
                proxykey_user=PROXYKEY_USERINFO[0],
                proxykey_password=PROXYKEY_USERINFO[1],
                cooldown=COOLDOWN_S,
            )
        )
        daemon = start_daemon(tmp_path, config=str(config), env_extra=dict(KEYS))
        try:
            yield World(daemon, sims)
        finally:
            stop_daemon(daemon)
    finally:
        for sim in sims.values():
            sim.stop()


CALLS: list[tuple[str, dict[str, object]]] = [
    ("/v1/chat/completions", {"model": "reason", "messages": [{"role": "user", "content": "hi"}]}),
    (
        "/v1/chat/completions",
        {"model": "reason", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ),
    ("/tools/reason", {"problem": "hi"}),
    ("/tools/reason", {"problem": "hi", "stream": True}),
]


def every_row(db: Path) -> Iterator[str]:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                yield f"{table}: {row!r}"


def test_no_canary_in_any_response_log_line_or_stored_row(world: World) -> None:
    for fault, (path, body) in itertools.product([*ECHO_FAULTS, Fault.http500], CALLS):
        for sim in ("r1", "claude", "gemini", "proxy"):
            world.sims[sim].set_fault(fault)
        time.sleep(COOLDOWN_S + 0.1)  # every circuit half-open: this call is its trial
        world.call(path, body)
        world.call(path, body)  # every circuit open again: the attempts show each "last:" reason
    # switches probe every remote member: their failures are recorded in the switch and /status
    for fault, stack in [
        (Fault.echo_key_long_error, "canary-b"),
        (Fault.refuse, "canary"),
        (Fault.echo_key_malformed, "canary-b"),
        (Fault.none, "canary"),
    ]:
        for sim in ("r1", "claude", "gemini", "proxy"):
            world.sims[sim].set_fault(fault)
        world.call("/model-stacks/switch", {"stack": stack})
    for simulator in world.sims.values():
        simulator.set_fault(Fault.none)
    for path in [
        "/status",
        "/roles",
        "/model-stacks",
        "/model-stacks/canary",
        "/usage",
        "/metrics",
        "/v1/models",
        "/tools",
        "/leases",
    ]:
        world.get(path)
    time.sleep(1.5)  # one usage flush
    stop_daemon(world.daemon)

    state = world.daemon.state_dir
    log = (state.parent / "daemon.log").read_text(errors="replace")
    rows = list(every_row(state / "stackd.db"))
    raw_files = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
    joined = "\n".join(world.responses)

    # the faults happened, on every protocol, and reached the responses
    for kind in ("malformed", "http_5xx", "circuit open"):
        assert kind in joined, kind
    for backend in ("r1", "claude", "gemini", "proxied"):
        assert f'"backend":"{backend}","status":"failed"' in joined.replace(" ", ""), backend
    assert "the endpoint has credentials in its URL and CANARY_PROXYKEY_KEY is set" in joined
    assert "***" in joined  # redacted text, not merely absent text
    assert rows, "stackd.db has rows (switches, usage)"

    hits = []
    for name, canary in canaries().items():
        hits += [f"{name} in response {i}" for i, text in enumerate(world.responses) if canary in text]
        hits += [f"{name} in the log, line {i}" for i, line in enumerate(log.splitlines()) if canary in line]
        hits += [f"{name} in row {row[:80]}" for row in rows if canary in row]
        hits += [
            f"{name} in the bytes of {file}" for file, data in raw_files.items() if canary.encode() in data
        ]
    assert hits == [], hits
    assert "Traceback" not in log
    print(
        f"canaries: {len(canaries())} forms; {len(world.responses)} responses "
        f"({len(joined)} chars), {len(log.splitlines())} log lines, {len(rows)} rows, "
        f"{len(raw_files)} state files: 0 hits"
    )
