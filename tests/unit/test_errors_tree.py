"""The tree drawn in ``stackd/errors.py``'s docstring is the tree in the code: every subclass of
``StackdError`` anywhere in ``stackd/`` is drawn, under the parent it really has, and nothing
drawn is made up. Read from the syntax tree, so a new error class fails here until it is drawn."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import stackd.errors

STACKD = Path(stackd.errors.__file__).parent
# "    │   ├── StateDirLocked   why": the name's column says its depth (4 characters a level)
DRAWN = re.compile(r"^    (?P<prefix>[│├└─ ]*)(?P<name>[A-Z][A-Za-z]+)\s{2,}\S")


def drawn_tree() -> dict[str, str | None]:
    """Each class the docstring draws -> the class it is drawn under (None for the root)."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in (stackd.errors.__doc__ or "").splitlines():
        match = DRAWN.match(line)
        if match is None:
            continue
        depth = len(match["prefix"]) // 4
        path[depth:] = [match["name"]]
        parents[match["name"]] = path[depth - 1] if depth else None
    return parents


def coded_tree() -> dict[str, str]:
    """Each subclass of StackdError defined in stackd/ -> its base class, from the source."""
    bases: dict[str, list[str]] = {}
    for file in STACKD.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.ClassDef):
                names = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                bases[node.name] = names
    errors: dict[str, str] = {}
    grown = True
    while grown:  # to a fixpoint: a subclass of a subclass is found on a later pass
        grown = False
        for name, parents in bases.items():
            for parent in parents:
                if name not in errors and (parent == "StackdError" or parent in errors):
                    errors[name] = parent
                    grown = True
    return errors


def test_the_tree_has_its_root() -> None:
    assert drawn_tree().get("StackdError", "absent") is None


def test_every_error_class_is_drawn_under_its_real_parent() -> None:
    drawn, coded = drawn_tree(), coded_tree()
    assert len(coded) > 30  # the scan found the tree (not an empty walk)
    missing = sorted(set(coded) - set(drawn))
    assert not missing, f"errors.py's docstring does not draw: {missing}"
    misplaced = {name: (drawn[name], parent) for name, parent in coded.items() if drawn[name] != parent}
    assert not misplaced, f"drawn under the wrong parent (drawn, real): {misplaced}"


def test_nothing_drawn_is_made_up() -> None:
    made_up = sorted(set(drawn_tree()) - set(coded_tree()) - {"StackdError"})
    assert not made_up, f"errors.py's docstring draws classes that do not exist: {made_up}"
