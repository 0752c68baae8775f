"""JSON Schema of ``model-stacks.yaml``, generated from the pydantic models.

Editors (the YAML language server) read ``docs/model-stacks.schema.json`` through the
``# yaml-language-server: $schema=...`` line at the top of the bundled config, and complete
keys and values from it. ``scripts/gen-schema`` rewrites that file; a test checks it is
current, so the schema never drifts from the models.
"""

from __future__ import annotations

import json
from typing import Any

from stackd.config.models import StacksConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_TITLE = "stackd model-stacks.yaml"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the config file, with ``$schema`` and ``title`` set."""
    schema = StacksConfig.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, **schema, "title": SCHEMA_TITLE}


def schema_text() -> str:
    """``json_schema()`` as the text committed in ``docs/model-stacks.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
