"""Usage is true on the embedded stack (issue 21, item 4): the REAL llama.cpp engine
(llama-cpp-python's server) behind ``stackd serve``, called through ``/v1/chat/completions``.

That server sends no usage in a stream (it ignores ``stream_options.include_usage``), so a
streamed call's prompt is rendered with the GGUF's chat template and counted with the engine's own
tokenizer (``/extras/tokenize/count``)
and marked ``estimated``; a non-streamed call carries the engine's report. Either way the prompt
is never a made-up 0, and ``/usage`` sums the same figures the answers carried.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.e2e.conftest import Daemon
from tests.e2e.test_embedded_stack import bare_daemon  # noqa: F401  (the fixture: its own daemon here)

# A prompt of some length: its count is well above any template's overhead.
MESSAGES = [{"role": "user", "content": "What is 2+3? Answer with the number only, nothing else."}]


def headers(daemon: Daemon) -> dict[str, str]:
    return {"Authorization": f"Bearer {(daemon.state_dir / 'token').read_text().strip()}"}


def usage_totals(daemon: Daemon) -> tuple[int, int]:
    rows = httpx.get(f"{daemon.url}/usage", headers=headers(daemon), timeout=10).json()["rows"]
    return sum(r["prompt_tokens"] for r in rows), sum(r["tokens_estimated"] for r in rows)


def streamed(daemon: Daemon, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    text, usage = "", None
    with httpx.stream(
        "POST", f"{daemon.url}/v1/chat/completions", headers=headers(daemon), json=body, timeout=120
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            for choice in chunk.get("choices") or ():
                text += choice["delta"].get("content") or ""
            usage = chunk.get("usage") or usage
    assert usage is not None, "no usage chunk although include_usage was asked"
    return text, usage


def test_prompt_tokens_are_counted_for_streamed_and_plain_calls(bare_daemon: Daemon) -> None:  # noqa: F811
    body = {"model": "orchestrator", "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    before_prompt, before_estimated = usage_totals(bare_daemon)

    plain = httpx.post(
        f"{bare_daemon.url}/v1/chat/completions", headers=headers(bare_daemon), json=body, timeout=120
    ).json()
    assert "usage" in plain, plain
    plain_usage = plain["usage"]
    assert plain_usage["prompt_tokens"] > 10, plain_usage  # 12 words
    assert plain_usage["completion_tokens"] >= 1, plain_usage

    text, usage = streamed(bare_daemon, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert text.strip()
    # the engine's own report, asked directly without a stream: the reference figure
    status = httpx.get(f"{bare_daemon.url}/status", timeout=10).json()
    [engine] = [m["process"]["endpoint"] for m in status["members"] if m["runtime"] == "process"]
    direct = httpx.post(f"{engine.rstrip('/')}/chat/completions", json=body, timeout=120).json()["usage"]
    print(f"engine's report {direct}; through stackd: plain {plain_usage}, streamed {usage}")
    # the engine's tokenizer on the prompt rendered with the GGUF's own chat template: the
    # engine's figure (its BOS at most apart), and said to be stackd's count
    for counted in (plain_usage, usage):  # the embedded member streams even a plain call
        assert counted["estimated"] is True, counted
        assert abs(counted["prompt_tokens"] - direct["prompt_tokens"]) <= 1, (counted, direct)
    assert usage["completion_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    # the ledger holds what the answers said (the flush is about once a second)
    expected = before_prompt + plain_usage["prompt_tokens"] + usage["prompt_tokens"]
    for _ in range(50):
        prompt, estimated = usage_totals(bare_daemon)
        if prompt >= expected:
            break
        time.sleep(0.1)
    assert prompt == expected
    assert estimated >= before_estimated + 1
