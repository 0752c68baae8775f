"""The JSON Schema generated from the models is committed, current, and accepts the bundled config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from stackd.config.loader import json_schema
from stackd.config.schema import SCHEMA_DIALECT, schema_text

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "model-stacks.schema.json"
BUNDLED = ROOT / "config" / "model-stacks.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "configs"


def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_equals_the_generated_one() -> None:
    # On failure: run scripts/gen-schema and commit docs/model-stacks.schema.json.
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == json_schema()
    assert COMMITTED.read_text(encoding="utf-8") == schema_text()


def test_schema_names_its_dialect_and_title() -> None:
    schema = json_schema()
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["title"] == "stackd model-stacks.yaml"
    assert set(schema["required"]) == {"default_stack", "roles", "models", "stacks"}


def test_bundled_config_points_editors_at_the_committed_schema() -> None:
    first_line = BUNDLED.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../docs/model-stacks.schema.json"
    assert (BUNDLED.parent / "../docs/model-stacks.schema.json").resolve() == COMMITTED.resolve()


@pytest.mark.parametrize("path", [BUNDLED, FIXTURES / "valid-minimal.yaml"], ids=lambda p: p.name)
def test_valid_configs_validate_against_the_schema(path: Path) -> None:
    errors = list(validator().iter_errors(yaml.safe_load(path.read_text(encoding="utf-8"))))
    assert errors == [], [e.message for e in errors]


@pytest.mark.parametrize(
    ("fixture", "where"),
    [
        ("bad-unknown-keys.yaml", ["verison"]),
        ("bad-enum.yaml", ["models", "orchestrator-8b", "runtime"]),
        ("bad-wrong-type.yaml", ["models", "orchestrator-8b", "memory_gb"]),
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(fixture: str, where: list[str]) -> None:
    data = yaml.safe_load((FIXTURES / fixture).read_text(encoding="utf-8"))
    errors = list(validator().iter_errors(data))
    assert errors
    # The error (or, for an unknown key, its mapping) sits where the loader reports it.
    paths = [list(e.absolute_path) for e in errors]
    assert where in paths or where[:-1] in paths


def test_gen_schema_script_check_mode_agrees() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-schema"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
