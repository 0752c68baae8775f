"""One phrase per step, in two spellings: the switch's error text (``start_container m (c)``) and
the CLI's (``start container m (c)``); one ``gib`` for the planner's refusals and the CLI's tables."""

from __future__ import annotations

from dataclasses import asdict

from stackd.cli.render import gib as table_gib
from stackd.cli.render import step_text
from stackd.planner.members import gib
from stackd.planner.plan import (
    BindRole,
    PullModel,
    StartContainer,
    Step,
    StopProcess,
    UnbindRole,
    describe_step,
)


def test_each_step_kind_has_one_phrase_in_both_spellings() -> None:
    cases: list[tuple[Step, str]] = [
        (StartContainer("orchestrator-8b", "aether-orch"), "start_container orchestrator-8b (aether-orch)"),
        (PullModel("embeddings-cpu", "nomic-embed-text"), "pull_model embeddings-cpu (nomic-embed-text)"),
        (StopProcess("reflex"), "stop_process reflex"),
        (BindRole("vision", "vision-7b"), "bind_role vision -> vision-7b"),
        (UnbindRole("vision"), "unbind_role vision"),
    ]
    for step, phrase in cases:
        as_json = asdict(step)
        assert describe_step(as_json) == phrase
        kind = as_json["kind"]
        assert step_text(as_json) == phrase.replace(kind, kind.replace("_", " "), 1)
    assert describe_step({"kind": "roles_swapped", "version": 3}) == "role table swap"
    assert step_text({"kind": "roles_swapped", "version": 3}) == "role table swap"


def test_a_container_named_as_its_model_is_not_named_twice() -> None:
    assert describe_step(asdict(StartContainer("vllm", "vllm"))) == "start_container vllm"


def test_one_gib_reads_as_a_person_or_as_a_table_column() -> None:
    assert (gib(13312), gib(32607)) == ("13 GiB", "31.8 GiB")
    assert (table_gib(13312), table_gib(32607), table_gib(None)) == ("13.0 GiB", "31.8 GiB", "-")
