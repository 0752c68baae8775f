"""docs/config-reference.md and docs/api-reference.md are current, and say everything.

``scripts/gen-docs --check`` regenerates both (the config reference from the JSON Schema, the API
reference from the daemon's OpenAPI document) and fails when a committed file differs: a change of
a config model or a route without ``scripts/gen-docs`` fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from stackd.api.reference import api_reference
from stackd.config.reference import config_reference
from stackd.config.schema import json_schema

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_references_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen-docs"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_config_reference_has_a_row_for_every_key_of_every_type() -> None:
    schema = json_schema()
    text = config_reference()
    for name, node in [("Top level", schema), *schema["$defs"].items()]:
        heading = f"## {name}" if name == "Top level" else f"### {name}"
        assert f"\n{heading}\n" in text, heading
        section = text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
        for key in node.get("properties", {}):
            assert f"| `{key}` |" in section, f"{name}.{key}"
    assert "| `default_stack` | string | required |" in text


def test_the_api_reference_has_a_section_for_every_operation_and_answer() -> None:
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"version": "9.9"},
        "paths": {
            "/things/{id}": {
                "delete": {
                    "summary": "Drop a thing",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "Dropped",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}
                            },
                        },
                        "404": {"description": "No such | thing"},
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "Thing": {
                    "type": "object",
                    "properties": {"id": {"type": "string", "description": "Its id."}},
                    "required": ["id"],
                }
            }
        },
    }
    text = api_reference(document)
    assert "| DELETE | [`/things/{id}`](#delete-thingsid) | yes | Drop a thing |" in text
    assert "### DELETE /things/{id}" in text
    assert "| `id` | path | string | yes |  |" in text
    assert "| 200 | application/json | [Thing](#thing) | Dropped |" in text
    assert "| 404 | none | none | No such \\| thing |" in text
    assert "### Thing" in text and "| `id` | string | required | Its id. |" in text
