"""${VAR} expansion, and the rule that no secret value ever reaches a dump or a problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stackd.config.envvars import expand_env
from stackd.config.loader import check_file, load_config

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "config" / "model-stacks.yaml"
MINIMAL = ROOT / "tests" / "fixtures" / "configs" / "valid-minimal.yaml"
SECRET = "sk-secret-123"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${HOST}", {"HOST": "h"}, "h"),
        ("http://${HOST}:${PORT:-80}/v1", {"HOST": "h"}, "http://h:80/v1"),
        ("${HOST:-fallback}", {"HOST": ""}, "fallback"),  # like the shell: empty takes the default
        ("${HOST:-}", {}, ""),
        ("${HOST}", {"HOST": ""}, ""),
        ("$HOST and ${ not a reference", {"HOST": "h"}, "$HOST and ${ not a reference"),
    ],
)
def test_expansion_follows_the_shell(text: str, env: dict[str, str], expected: str) -> None:
    result = expand_env({"a": [text]}, env)
    assert result.data == {"a": [expected]}
    assert result.unset == []


def test_unset_references_are_listed_with_their_path_and_left_as_written() -> None:
    data: dict[str, Any] = {"models": {"m": {"endpoint": "${A}/${B}", "tags": ["${C}"]}}, "n": 5}
    result = expand_env(data, {"B": "b"})
    assert [(u.path, u.name) for u in result.unset] == [
        (("models", "m", "endpoint"), "A"),
        (("models", "m", "tags", 0), "C"),
    ]
    assert result.data == {"models": {"m": {"endpoint": "${A}/b", "tags": ["${C}"]}}, "n": 5}
    assert result.from_environment == {("models", "m", "endpoint")}
    assert data["models"]["m"]["endpoint"] == "${A}/${B}"  # the input is not modified


def test_api_key_values_never_appear_in_the_loaded_config() -> None:
    env = {"GEMINI_API_KEY": SECRET, "ANTHROPIC_API_KEY": SECRET + "-a", "VAST_API_KEY": SECRET + "-v"}
    config = load_config(BUNDLED, env=env)
    assert config.models["gemini-flash"].remote is not None
    assert config.models["gemini-flash"].remote.api_key_env == "GEMINI_API_KEY"
    assert SECRET not in config.model_dump_json()


def test_a_secret_in_a_url_reference_is_allowed() -> None:
    url = f"https://user:{SECRET}@vast.example/v1"
    config = load_config(BUNDLED, env={"VAST_R1_URL": url})
    assert config.models["deepseek-r1-cloud"].endpoint == url


def test_a_value_from_the_environment_is_never_echoed_in_a_problem(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace("memory_gb: 13", "memory_gb: ${ORCH_MEMORY}")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    (problem,) = check_file(path, env={"ORCH_MEMORY": SECRET})
    assert (problem.line, problem.path) == (15, "models.orchestrator-8b.memory_gb")
    assert problem.message == "expected a number, got a value from the environment"
    assert SECRET not in str(problem)


def test_a_key_pasted_into_api_key_env_is_not_echoed(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace("api_key_env: GEMINI_API_KEY", f"api_key_env: {SECRET}")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    (problem,) = check_file(path, env={})
    assert (problem.line, problem.path) == (36, "models.gemini-flash.remote.api_key_env")
    assert "NAME of the environment variable" in problem.fix
    assert SECRET not in str(problem)
