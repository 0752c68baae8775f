"""`stackd config check` tells everything in one pass, at the line of the offending key.

A file with schema errors still has its references checked, without the follow-on problems a
broken section would cause; values the types accept but that fail at run time (a URL that is
not one, an unclosed ``${``, a port above 65535, ``keep_alive: forever``, memory in MiB written
as GiB) are refused with FILE:LINE and a fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from stackd.config.loader import Problem, check_file, load_config
from stackd.config.models import StacksConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "configs"
MINIMAL = FIXTURES / "valid-minimal.yaml"
SECRET = "sk-secret-123"


def problems_after(
    tmp_path: Path, *edits: tuple[str, str], env: dict[str, str] | None = None
) -> list[Problem]:
    text = MINIMAL.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return check_file(path, env=env or {})


def where(problems: list[Problem]) -> list[tuple[int, str]]:
    return [(p.line, p.path) for p in problems]


# ------------------------------------------------------------------------------- one pass


def test_a_typo_a_wrong_type_and_a_missing_model_are_reported_together() -> None:
    problems = check_file(FIXTURES / "bad-one-pass.yaml", env={})
    assert [(p.line, p.path, p.message) for p in problems] == [
        (15, "models.orchestrator-8b.memory_gb", "expected a number, got 'thirteen'"),
        (23, "models.vision-qwen.lifecylce", "unknown key 'lifecylce'"),
        (41, "stacks.main.roles.vision", "unknown model 'vision-qwn'"),
    ]
    assert all(p.fix for p in problems)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # The typo is the problem, not every role bound to one of the models it hides.
        ("models:\n", "modles:\n", [(3, "models"), (9, "modles")]),
        # A role whose section is misspelt is not also "required role not bound".
        ("    roles:\n      orchestrator:", "    rolse:\n      orchestrator:", [(39, "stacks.main.rolse")]),
        # A name the schema refuses is not also an unknown model.
        (
            "vision: vision-qwen\n    members",
            "vision: Vision Qwen\n    members",
            [(41, "stacks.main.roles.vision")],
        ),
        # An unset variable is not also "not a URL".
        (
            "${GEMINI_BASE_URL:-https://generativelanguage.googleapis.com/v1beta}",
            "${NOPE_URL}",
            [(35, "models.gemini-flash.endpoint")],
        ),
        # No stack at all is one problem, not also "default_stack: unknown stack".
        ("stacks:\n", "stacks: {}\nold_stacks:\n", [(37, "stacks"), (38, "old_stacks")]),
    ],
)
def test_no_follow_on_problems(tmp_path: Path, old: str, new: str, expected: list[tuple[int, str]]) -> None:
    assert where(problems_after(tmp_path, (old, new))) == expected


def test_a_model_with_a_misspelt_key_is_left_out_of_the_vram_sum(tmp_path: Path) -> None:
    # Read as always-on, vision-qwen's 8 GiB would put the stack over a 22 GiB card: a guess.
    edits = (("    lifecycle: on_demand\n", "    lifecylce: on_demand\n"), ("total_gb: 32", "total_gb: 22"))
    assert where(problems_after(tmp_path, *edits)) == [(23, "models.vision-qwen.lifecylce")]


def test_a_model_problem_and_a_reference_problem_of_another_section_both_count(tmp_path: Path) -> None:
    problems = problems_after(
        tmp_path,
        ("    runtime: docker\n", "    runtime: dockr\n"),
        ("members: [elastic-12b, gemini-flash]", "members: [elastic-12b, gemini-flsh]"),
        ("default_stack: main", "default_stack: mian"),
    )
    assert where(problems) == [
        (4, "default_stack"),
        (11, "models.orchestrator-8b.runtime"),
        (42, "stacks.main.members[1]"),
    ]


def test_a_config_built_in_code_still_refuses_a_dangling_reference() -> None:
    data = yaml.safe_load(
        MINIMAL.read_text().replace("vision: vision-qwen\n    members", "vision: nope\n    members")
    )
    data["models"]["gemini-flash"]["endpoint"] = "https://generativelanguage.googleapis.com/v1beta"
    with pytest.raises(ValidationError, match="unknown model 'nope'"):
        StacksConfig.model_validate(data)


# ---------------------------------------------------------------- values that fail at run time


def test_every_bad_value_is_refused_at_its_line_with_a_fix() -> None:
    problems = check_file(FIXTURES / "bad-values.yaml", env={})
    assert [(p.line, p.path, p.message) for p in problems] == [
        (7, "ollama.url", "'${OLLAMA_HOST:-http://127.0.0.1:11434' has no closing '}'"),
        (16, "models.orchestrator-8b.endpoint", "is not a URL (got 'not a url at all')"),
        (20, "models.orchestrator-8b.docker.spec.ports.8000/tcp", "is not a port (got 99999)"),
        (
            25,
            "models.vision-qwen.endpoint",
            "the URL's scheme must be http or https, and '//' comes before the host "
            "(got 'htp:/127.0.0.1:8130/v1')",
        ),
        (26, "models.vision-qwen.memory_gb", "no single GPU has 400 GiB"),
        (34, "models.elastic-12b.ollama.keep_alive", "is not a duration (got 'forever')"),
        (39, "models.gemini-flash.endpoint", "'1BAD-NAME' in '${1BAD-NAME}' is not a valid variable name"),
        (
            45,
            "models.claude-sonnet.endpoint",
            "the URL's port is out of range (got 'https://api.anthropic.com:99999')",
        ),
        (51, "models.big-cpu.memory_gb", "no machine has 5000 GiB of RAM"),
    ]
    fixes = [p.fix for p in problems]
    assert fixes[0] == "end it with '}': ${OLLAMA_HOST:-http://127.0.0.1:11434}"
    assert fixes[1] == fixes[3] == "write http://HOST:PORT/PATH, e.g. http://127.0.0.1:8120/v1"
    assert fixes[2] == fixes[7] == "use a port between 1 and 65535"
    assert fixes[4].startswith("did you mean MiB? memory_gb is in GiB: 400 MiB is memory_gb: 0.39")
    assert "5m, 1h30m or 300s, a number of seconds, -1 (forever) or 0" in fixes[5]
    assert "NAME of letters, digits and '_', not starting with a digit" in fixes[6]


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        (
            "endpoint: http://127.0.0.1:8120/v1",
            "endpoint: 127.0.0.1:8120/v1",
            "models.orchestrator-8b.endpoint",
            "the URL has no scheme",
        ),
        (
            "endpoint: http://127.0.0.1:8120/v1",
            "endpoint: http://:8120/v1",
            "models.orchestrator-8b.endpoint",
            "the URL has no host",
        ),
        (
            "endpoint: http://127.0.0.1:8120/v1",
            "endpoint: http://127.0.0.1:0/v1",
            "models.orchestrator-8b.endpoint",
            "the URL's port is out of range",
        ),
        (
            "endpoint: http://127.0.0.1:8120/v1",
            "endpoint: http://127.0.0.1:${PORT}/v1",
            "models.orchestrator-8b.endpoint",
            "${PORT} is filled in for process models only",
        ),
        (
            "options: {num_gpu: 0}}",
            "options: {num_gpu: 0}, keep_alive: '300'}",
            "models.elastic-12b.ollama.keep_alive",
            "a quoted number is not a duration for Ollama",
        ),
        (
            "options: {num_gpu: 0}}",
            "options: {num_gpu: 0}, keep_alive: true}",
            "models.elastic-12b.ollama.keep_alive",
            "is not a duration",
        ),
        (
            "docker: {container: aether-vision}",
            'docker: {container: aether-vision, spec: {image: i, ports: {"99999/tcp": 80}}}',
            "models.vision-qwen.docker.spec.ports.99999/tcp",
            "is not a container port",
        ),
        (
            "gpu: {total_gb: 32, reserve_gb: 3}",
            "gpu: {total_gb: 32, reserve_gb: 3}\nollama: {url: 'htp://x'}",
            "ollama.url",
            "the URL's scheme must be http or https",
        ),
    ],
)
def test_a_value_that_fails_at_run_time_is_refused(
    tmp_path: Path, old: str, new: str, path: str, message: str
) -> None:
    (problem,) = problems_after(tmp_path, (old, new))
    assert problem.path == path
    assert problem.message.startswith(message)
    assert problem.fix


@pytest.mark.parametrize("keep_alive", ["5m", "1h30m", "300s", "'0'", "0", "-1", "300", "-1m", "1.5h"])
def test_durations_ollama_reads_are_accepted(tmp_path: Path, keep_alive: str) -> None:
    edit = ("options: {num_gpu: 0}}", f"options: {{num_gpu: 0}}, keep_alive: {keep_alive}}}")
    assert problems_after(tmp_path, edit) == []


def test_the_largest_gpus_and_an_explicit_large_card_are_not_refused(tmp_path: Path) -> None:
    # A 288 GB card has 268 GiB; gpu.total_gb above the usual bound raises it.
    largest = ("    memory_gb: 8\n", "    memory_gb: 268\n")  # vision-qwen is on demand
    assert problems_after(tmp_path, largest) == []
    larger = ("    memory_gb: 8\n", "    memory_gb: 500\n")
    assert problems_after(tmp_path, larger, ("total_gb: 32", "total_gb: 512")) == []


def test_a_process_models_endpoint_keeps_its_port_macro(tmp_path: Path) -> None:
    process = (
        "  elastic-12b:\n    runtime: ollama\n    placement: cpu\n    api: ollama\n    memory_gb: 7.5\n"
        '    ollama: {tag: "nemotron-elastic:12b", options: {num_gpu: 0}}\n',
        "  elastic-12b:\n    runtime: process\n    placement: cpu\n    api: openai\n    memory_gb: 0.6\n"
        "    endpoint: http://127.0.0.1:${PORT}/v1\n"
        '    process: {command: ["${PYTHON}", "-m", "engine", "--port", "${PORT}"]}\n',
    )
    assert problems_after(tmp_path, process) == []


def test_a_bad_url_from_the_environment_is_not_echoed(tmp_path: Path) -> None:
    edit = ("${GEMINI_BASE_URL:-https://generativelanguage.googleapis.com/v1beta}", "${GEMINI_BASE_URL}")
    (problem,) = problems_after(
        tmp_path, edit, env={"GEMINI_BASE_URL": f"htp:/user:{SECRET}@gemini.example/v1"}
    )
    assert (problem.line, problem.path) == (35, "models.gemini-flash.endpoint")
    assert problem.message.endswith("(got a value from the environment)")
    assert SECRET not in str(problem)
    good = {"GEMINI_BASE_URL": f"https://user:{SECRET}@gemini.example/v1"}
    assert problems_after(tmp_path, edit, env=good) == []


def test_memory_from_the_environment_is_not_echoed(tmp_path: Path) -> None:
    (problem,) = problems_after(
        tmp_path, ("    memory_gb: 8\n", "    memory_gb: ${VISION_GB}\n"), env={"VISION_GB": "4096"}
    )
    assert (problem.line, problem.path) == (22, "models.vision-qwen.memory_gb")
    assert problem.message == "no single GPU has that much memory"
    assert "4096" not in str(problem)


def test_the_bundled_and_demo_configs_stay_valid() -> None:
    for path in (ROOT / "config" / "model-stacks.yaml", ROOT / "config" / "examples" / "demo.yaml"):
        assert check_file(path, env={}) == [], path
    load_config(ROOT / "config" / "model-stacks.yaml", env={"OLLAMA_HOST": "http://10.0.0.5:11434"})


# ---------------------------------------------------------------------- at the offending key


def test_a_key_merged_from_an_anchor_is_reported_at_the_anchors_line(tmp_path: Path) -> None:
    problems = problems_after(
        tmp_path,
        ("  main:\n", "  main: &main\n"),
        ("      vision: vision-qwen\n", "      vision: vision-qwn\n"),
        (
            "    members: [elastic-12b, gemini-flash]\n",
            "    members: [elastic-12b, gemini-flash]\n  copy:\n    <<: *main\n    description: main's roles\n",
        ),
    )
    # Before: stacks.copy.roles.vision pointed at 'copy:' (line 43), which holds no role at all.
    assert where(problems) == [(41, "stacks.main.roles.vision"), (41, "stacks.copy.roles.vision")]


def test_a_key_of_a_nested_merge_is_found(tmp_path: Path) -> None:
    problems = problems_after(
        tmp_path,
        ("    roles:\n", "    roles: &roles\n"),
        ("      vision: vision-qwen\n", "      vision: vision-qwn\n"),
        (
            "    members: [elastic-12b, gemini-flash]\n",
            "    members: [elastic-12b, gemini-flash]\n"
            "  mid:\n    roles: &mid\n      <<: *roles\n"
            "  last:\n    roles:\n      <<: *mid\n      orchestrator: orchestrator-8b\n",
        ),
    )
    assert where(problems) == [
        (41, "stacks.main.roles.vision"),
        (41, "stacks.mid.roles.vision"),
        (41, "stacks.last.roles.vision"),
    ]


def test_a_name_from_the_environment_is_not_echoed_in_a_reference_problem(tmp_path: Path) -> None:
    edit = ("default_stack: main", "default_stack: ${STACK}")
    (problem,) = problems_after(tmp_path, edit, env={"STACK": SECRET})
    assert (problem.line, problem.path) == (4, "default_stack")
    assert problem.message == "unknown stack (a value from the environment)"
    assert SECRET not in str(problem)
