"""Keys with scopes and limits on a real ``stackd serve`` (issue 26), over an OpenAI simulator.

A gateway key chats and is refused a switch (403 naming the scope); a revoked key gets 401 on
its next request, the daemon still running; no key is stored or logged in plain text; a key
over its rpm or daily-token limit gets 429 with ``Retry-After``, and still after a restart;
the audit trail and ``stackd usage --by key`` name the key; ``/v1/models`` lists only what a
key limited to some models may call.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from stackd.sim import OpenAISim
from tests.e2e.conftest import SOLO_REMOTE_CONFIG, Daemon, start_daemon, stop_daemon

CHAT = {"model": "orchestrator", "messages": [{"role": "user", "content": "say hi"}]}


def create_key(daemon: Daemon, name: str, *options: str) -> str:
    done = daemon.cli("keys", "create", "--name", name, *options, "--json", check=True)
    return str(json.loads(done.stdout)["key"])


def chat(daemon: Daemon, key: str) -> httpx.Response:
    return httpx.post(
        f"{daemon.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def listed(daemon: Daemon, key: str) -> list[str]:
    """The ids ``GET /v1/models`` lists for ``key``."""
    answer = httpx.get(f"{daemon.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return [m["id"] for m in answer.json()["data"]]


def start(tmp_path: Path, sim_url: str) -> Daemon:
    config = tmp_path / "stacks.yaml"
    config.write_text(SOLO_REMOTE_CONFIG.format(url=sim_url))
    return start_daemon(tmp_path, "--no-periodic", config=str(config))


def test_a_gateway_key_chats_may_not_switch_and_stops_working_once_revoked(tmp_path: Path) -> None:
    with OpenAISim.start_in_thread() as sim:
        daemon = start(tmp_path, sim.url)
        try:
            key = create_key(daemon, "ide", "--scope", "gateway")
            answer = chat(daemon, key)
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
            switch = httpx.post(
                f"{daemon.url}/model-stacks/switch",
                json={"stack": "solo"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert switch.status_code == 403
            assert switch.json()["needed_scope"] == "operator" and "operator" in switch.json()["message"]
            narrow = create_key(daemon, "narrow", "--scope", "gateway", "--models", "reason")
            refused = chat(daemon, narrow)
            assert refused.status_code == 403 and "orchestrator" in refused.json()["error"]["message"]
            # /v1/models lists what a key may call: all for the bootstrap token and an
            # unrestricted key, only its own for a key limited to some.
            assert listed(daemon, daemon.token) == ["orchestrator", "reason"]
            assert listed(daemon, key) == ["orchestrator", "reason"]
            assert listed(daemon, narrow) == ["reason"]

            revoked = daemon.cli("keys", "revoke", "ide")
            assert revoked.returncode == 0, revoked.stderr
            after = chat(daemon, key)
            assert after.status_code == 401 and after.json()["error"]["code"] == "invalid_api_key"

            trail = json.loads(daemon.cli("audit", "--json", check=True).stdout)["entries"]
            actions = [(e["key"], e["action"], e["target"], e["outcome"]) for e in trail]
            assert ("bootstrap", "DELETE /keys/{name}", "ide", "200") in actions
            assert ("bootstrap", "POST /keys", "narrow", "201") in actions
            assert ("ide", "POST /model-stacks/switch", "", "403") in actions
            assert {e["peer"] for e in trail} == {"127.0.0.1"}

            by_key = json.loads(daemon.cli("usage", "--by", "key", "--json", check=True).stdout)["rows"]
            assert [(r["key"], r["calls"]) for r in by_key] == [("ide", 1)] and by_key[0]["tokens"] > 0
        finally:
            stop_daemon(daemon)
        # No key in plain text: not in the database (with its WAL), not in the daemon's log.
        stored = b"".join(p.read_bytes() for p in daemon.state_dir.glob("stackd.db*"))
        logged = (tmp_path / "daemon.log").read_bytes()
        for text in (key, narrow):
            assert text.encode() not in stored and text.encode() not in logged
        assert b"sk-stackd-" not in stored


def test_limits_answer_429_with_retry_after_and_survive_a_restart(tmp_path: Path) -> None:
    with OpenAISim.start_in_thread() as sim:
        daemon = start(tmp_path, sim.url)
        try:
            tokens = create_key(daemon, "tokens", "--scope", "gateway", "--daily-tokens", "1")
            rpm = create_key(daemon, "rpm", "--scope", "gateway", "--rpm", "2")
            assert chat(daemon, tokens).status_code == 200  # its tokens are counted once answered
            over = chat(daemon, tokens)
            assert over.status_code == 429, over.text
            assert 0 < int(over.headers["retry-after"]) <= 86400
            assert "daily_tokens" in over.json()["error"]["message"]
            assert [chat(daemon, rpm).status_code for _ in range(3)] == [200, 200, 429]
        finally:
            stop_daemon(daemon)
        started = time.monotonic()
        daemon = start(tmp_path, sim.url)
        try:
            again = chat(daemon, tokens)
            assert again.status_code == 429 and "daily_tokens" in again.json()["error"]["message"]
            if time.monotonic() - started < 50:  # the minute of the first two calls is not over
                limited = chat(daemon, rpm)
                assert limited.status_code == 429 and "rpm" in limited.json()["error"]["message"]
                assert 0 < int(limited.headers["retry-after"]) <= 60
        finally:
            stop_daemon(daemon)
