"""The scope table is one table: docs/security.md mirrors ``stackd.api.scopes``, and every route
the app serves (and every MCP tool) has its row."""

from __future__ import annotations

import re
from pathlib import Path

from stackd.api.scopes import MCP_TOOLS, ROUTES

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ROW = re.compile(r"^\| (GET|POST|DELETE) \| `([^`]+)` \| ([\w-]+) \| (yes|no) \|$", re.M)
TOOL_ROW = re.compile(r"^\| `(\w+)` \| (\w+) \|$", re.M)


def documented_routes() -> dict[tuple[str, str], tuple[str, bool]]:
    return {(m, p): (scope, open_ == "yes") for m, p, scope, open_ in ROW.findall(DOC.read_text())}


def documented_tools() -> dict[str, str]:
    return dict(TOOL_ROW.findall(DOC.read_text()))


def test_docs_security_md_mirrors_the_route_table() -> None:
    code = {
        (r.method, r.path): (r.label, (r.scope is None and not r.any_key) or r.loopback_open) for r in ROUTES
    }
    assert documented_routes() == code


def test_docs_security_md_mirrors_the_mcp_tool_table() -> None:
    assert documented_tools() == {name: str(scope) for name, scope in MCP_TOOLS.items()}
