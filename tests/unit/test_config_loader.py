"""The loader reports every problem of a config file at its line, with a fix.

Each bad file in tests/fixtures/configs breaks valid-minimal.yaml in one way (its first two
lines say how); the tests pin the line, the dotted field path and the fix a person reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.config.loader import Problem, check_file, load_config
from stackd.config.models import Runtime
from stackd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "config" / "model-stacks.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "configs"
NO_ENV: dict[str, str] = {}


def problems_of(name: str, env: dict[str, str] | None = None) -> list[Problem]:
    return check_file(FIXTURES / name, env=NO_ENV if env is None else env)


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_bundled_config_loads_with_the_seed_stacks_and_the_embedded_ones() -> None:
    config = load_config(BUNDLED, env=NO_ENV)
    assert sorted(config.stacks) == [
        "cloud-offload",
        "elastic-hybrid",
        "embedded",
        "embedded-long",
        "ollama-hybrid",
        "ollama-only",
    ]
    assert config.fallback_stacks[-1] == "embedded"
    # ${PORT} & co. in a process section are the process runtime's, not environment variables.
    assert "${PORT}" in config.models["smollm2-135m"].process.command  # type: ignore[union-attr]
    assert config.default_stack == "cloud-offload"
    # ${OLLAMA_HOST:-http://127.0.0.1:11434} falls back to its default when the variable is unset.
    assert config.ollama.url == "http://127.0.0.1:11434"


def test_minimal_fixture_is_valid() -> None:
    assert problems_of("valid-minimal.yaml") == []
    config = load_config(FIXTURES / "valid-minimal.yaml", env=NO_ENV)
    assert config.models["elastic-12b"].runtime == Runtime.ollama


def test_env_references_expand_from_the_given_environment() -> None:
    config = load_config(BUNDLED, env={"OLLAMA_HOST": "http://10.0.0.5:11434"})
    assert config.ollama.url == "http://10.0.0.5:11434"


def test_problem_reads_file_line_path_message_fix() -> None:
    problem = Problem("cfg.yaml", 41, "stacks.main.roles.vision", "unknown model 'x'", "use one of ['y']")
    assert str(problem) == "cfg.yaml:41: stacks.main.roles.vision: unknown model 'x'; use one of ['y']"
    assert str(Problem("cfg.yaml", 1, "", "file not found", "check the path")) == (
        "cfg.yaml:1: file not found; check the path"
    )


def test_yaml_syntax_error_is_reported_at_the_parsers_line() -> None:
    problem = only(problems_of("bad-yaml-syntax.yaml"))
    assert (problem.line, problem.path) == (31, "")
    assert problem.message.startswith("YAML syntax error: expected ',' or '}'")
    assert "flow mapping that starts at line 30" in problem.message
    assert "indentation" in problem.fix


def test_unknown_keys_top_level_and_nested_name_the_allowed_keys() -> None:
    top, nested = problems_of("bad-unknown-keys.yaml")
    assert (top.line, top.path, top.message) == (3, "verison", "unknown key 'verison'")
    assert "did you mean 'version'?" in top.fix
    assert "allowed: auth, cluster, default_stack, fallback_stacks, gpu, models" in top.fix
    assert (nested.line, nested.path) == (15, "models.orchestrator-8b.memroy_gb")
    assert "did you mean 'memory_gb'?" in nested.fix
    assert (
        "remove it or check the spelling (allowed: always_stream, api, architecture, description, docker,"
        in nested.fix
    )


def test_missing_required_field_is_reported_at_its_parent_key() -> None:
    problem = only(problems_of("bad-missing-field.yaml"))
    assert (problem.line, problem.path) == (10, "models.orchestrator-8b.placement")
    assert (problem.message, problem.fix) == ("required field missing", "add 'placement: ...'")


def test_wrong_type_says_what_was_expected_and_what_was_found() -> None:
    problem = only(problems_of("bad-wrong-type.yaml"))
    assert (problem.line, problem.path) == (15, "models.orchestrator-8b.memory_gb")
    assert problem.message == "expected a number, got 'thirteen'"
    assert "write a number" in problem.fix


def test_bad_enum_value_lists_the_choices_and_the_closest() -> None:
    problem = only(problems_of("bad-enum.yaml"))
    assert (problem.line, problem.path) == (11, "models.orchestrator-8b.runtime")
    assert problem.message == "invalid value 'dockr'"
    assert problem.fix == "must be one of 'docker', 'process', 'ollama' or 'remote' (did you mean 'docker'?)"


def test_unknown_model_bound_to_a_role() -> None:
    problem = only(problems_of("bad-unknown-model-role.yaml"))
    assert (problem.line, problem.path) == (41, "stacks.main.roles.vision")
    assert problem.message == "unknown model 'vision-qwn'"
    assert "use one of" in problem.fix and "'vision-qwen'" in problem.fix


def test_unknown_model_in_members() -> None:
    problem = only(problems_of("bad-unknown-model-member.yaml"))
    assert (problem.line, problem.path) == (42, "stacks.main.members[1]")
    assert problem.message == "unknown model 'gemini-flsh'"
    assert "'gemini-flash'" in problem.fix


def test_unknown_role() -> None:
    problem = only(problems_of("bad-unknown-role.yaml"))
    assert (problem.line, problem.path) == (41, "stacks.main.roles.visoin")
    assert problem.message == "unknown role 'visoin'"
    assert "declare it under roles:" in problem.fix


def test_duplicate_key_is_an_error_although_yaml_accepts_it() -> None:
    problem = only(problems_of("bad-duplicate-role-binding.yaml"))
    assert (problem.line, problem.path) == (41, "stacks.main.roles.orchestrator")
    assert str(problem).endswith("duplicate key 'orchestrator' (first at line 40); names must be unique")


def test_duplicate_model_name_and_what_it_hides() -> None:
    duplicate, dangling = problems_of("bad-duplicate-model.yaml")
    assert (duplicate.line, duplicate.path) == (25, "models.vision-qwen")
    assert duplicate.message == "duplicate key 'vision-qwen' (first at line 17)"
    assert duplicate.fix == "names must be unique"
    # The second vision-qwen replaced the block that followed 'elastic-12b:', so the stack's member dangles.
    assert (dangling.line, dangling.path, dangling.message) == (
        42,
        "stacks.main.members[0]",
        "unknown model 'elastic-12b'",
    )


def test_two_models_sharing_a_container() -> None:
    problem = only(problems_of("bad-duplicate-container.yaml"))
    assert (problem.line, problem.path) == (24, "models.vision-qwen.docker.container")
    assert problem.message == "container 'aether-orchestrator' is already used by model 'orchestrator-8b'"
    assert problem.fix == "give each model its own container"


def test_always_on_vram_above_the_card() -> None:
    problem = only(problems_of("bad-vram.yaml"))
    assert (problem.line, problem.path) == (38, "stacks.main")
    assert "need 16 GiB (orchestrator-8b 13 GiB, reserve 3 GiB) but gpu.total_gb is 14" in problem.message
    assert "move a model to on_demand or to the CPU" in problem.fix


def test_runtime_section_mismatch_strips_pydantics_prefix() -> None:
    problem = only(problems_of("bad-runtime-mismatch.yaml"))
    assert (problem.line, problem.path) == (10, "models.orchestrator-8b")
    assert problem.message == "runtime is ollama but the 'ollama' section is missing"
    assert problem.fix == "add a 'ollama:' section"
    assert "Value error" not in str(problem)


def test_unset_variable_without_default() -> None:
    problem = only(problems_of("bad-unset-var.yaml"))
    assert (problem.line, problem.path) == (14, "models.orchestrator-8b.endpoint")
    assert problem.message == "environment variable ORCHESTRATOR_URL is not set"
    assert problem.fix == "set ORCHESTRATOR_URL or write ${ORCHESTRATOR_URL:-default}"
    assert problems_of("bad-unset-var.yaml", env={"ORCHESTRATOR_URL": "http://127.0.0.1:8120/v1"}) == []


def test_every_problem_of_a_file_is_reported_in_file_order() -> None:
    problems = problems_of("bad-many.yaml")
    assert [(p.line, p.path) for p in problems] == [
        (3, "verison"),
        (11, "models.orchestrator-8b.runtime"),
        (22, "models.vision-qwen.memory_gb"),
        (35, "models.gemini-flash.endpoint"),
        (41, "stacks.main.roles.orchestrator"),
    ]
    assert all(p.fix for p in problems)


def test_every_reference_problem_is_reported() -> None:
    problems = problems_of("bad-many-references.yaml")
    assert [(p.line, p.path) for p in problems] == [
        (24, "models.vision-qwen.docker.container"),
        (39, "stacks.main.roles"),  # the required orchestrator role is no longer bound
        (40, "stacks.main.roles.orchestrater"),
        (41, "stacks.main.roles.vision"),
        (42, "stacks.main.members[1]"),
    ]


def test_load_config_raises_config_error_with_all_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(FIXTURES / "bad-many.yaml", env=NO_ENV)
    error = caught.value
    assert len(error.problems) == 5
    assert all(isinstance(p, Problem) for p in error.problems)
    assert error.message.startswith(f"invalid config {FIXTURES / 'bad-many.yaml'} (5 problems):")
    assert str(error.problems[0]) in error.message
    assert error.to_dict()["problems"] == [str(p) for p in error.problems]


def test_missing_file() -> None:
    missing = FIXTURES / "no-such-file.yaml"
    problem = only(check_file(missing))
    assert str(problem) == f"{missing}:1: file not found; check the path, e.g. config/model-stacks.yaml"
    with pytest.raises(ConfigError, match="file not found"):
        load_config(missing)


def test_empty_file() -> None:
    problem = only(problems_of("empty.yaml"))
    assert (problem.line, problem.path, problem.message) == (1, "", "the file is empty")
    assert "default_stack" in problem.fix


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("- a\n- b\n", 1, "the file must be a mapping of keys, got a list"),
        ("\n\njust a string\n", 3, "the file must be a mapping of keys, got a single value"),
        ("a:\n\tb: 1\n", 2, "found character '\\t' that cannot start any token"),
        ("version: 1\n---\nversion: 1\n", 2, "but found another document"),
        ("x: !!python/object:os.system ls\n", 1, "could not determine a constructor"),
        ("x: &loop [*loop]\n", 1, "recursive structure"),
        ("x: 2001-13-45\n", 1, "month must be in 1..12"),
    ],
)
def test_files_that_are_not_a_config_mapping(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    problem = only(check_file(path))
    assert problem.line == line
    assert expected in problem.message
    assert problem.fix


def test_unreadable_inputs_are_problems_not_crashes(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("version: 1\ndescription: caf\xe9\n".encode("latin-1"))
    problem = only(check_file(latin1))
    assert (problem.line, problem.message) == (2, "not UTF-8 text (byte 0xe9)")
    assert only(check_file(tmp_path)).message == "is a directory, not a file"


def test_a_valid_file_after_a_bad_one_loads(tmp_path: Path) -> None:
    # check_file keeps no state between calls: a daemon can refuse a reload and accept the next.
    assert problems_of("bad-many.yaml")
    assert check_file(FIXTURES / "valid-minimal.yaml", env=NO_ENV) == []
