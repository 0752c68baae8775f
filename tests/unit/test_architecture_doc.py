"""docs/architecture.md names every module: the first column of its module table, read like a
person reads it (``stackd/config/loader.py``, ``yaml_source.py`` -> both in ``stackd/config/``),
against the tree. A new module fails here until the table says what it is; a row naming a module
that is gone fails too."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
NAME = re.compile(r"`([^`]+)`")


def table_rows() -> list[str]:
    """The first cell of each row of the ``## Modules`` table."""
    text = DOC.read_text()
    section = text.split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [row.split(" | ", 1)[0] for row in rows]


def named_modules() -> list[str]:
    """Every module the table names, as a path from the repository root (repeats kept)."""
    named: list[str] = []
    for cell in table_rows():
        folder = ""
        for name in NAME.findall(cell):
            if name.startswith("stackd/"):
                folder = name.rsplit("/", 1)[0]
                path = name
            else:  # a bare name lives beside the last path named in the cell
                assert folder, f"{name!r} in {cell!r} comes before any stackd/ path"
                path = f"{folder}/{name}"
            if path.endswith(".py") and not path.endswith(("__init__.py", "__main__.py")):
                named.append(path)
    return named


def tree_modules() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "stackd").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }


def test_the_table_is_found() -> None:
    assert len(table_rows()) > 20


def test_every_module_is_named() -> None:
    missing = sorted(tree_modules() - set(named_modules()))
    assert not missing, f"docs/architecture.md's module table does not name: {missing}"


def test_every_name_exists() -> None:
    gone = sorted(set(named_modules()) - tree_modules())
    assert not gone, f"docs/architecture.md's module table names modules that do not exist: {gone}"


def test_no_module_is_named_twice() -> None:
    named = named_modules()
    twice = sorted({path for path in named if named.count(path) > 1})
    assert not twice, f"docs/architecture.md's module table names these in more than one row: {twice}"
