"""One problem of a config file, and the translation of pydantic's errors into problems.

A problem reads ``FILE:LINE: field.path: what is wrong; how to fix it``: an editor jumps to
the line, a person reads the fix. pydantic's messages ("Extra inputs are not permitted") say
neither where nor what to do, so each error type gets its own sentence here. Values are
echoed to help spot a typo, except values that came from the environment and ``*_env``
fields: either may hold a secret.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Annotated, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from stackd.config.models import StacksConfig
from stackd.config.yaml_source import FieldPath, YamlDocument

SCHEMA_HINT = "see docs/model-stacks.schema.json"

# Expected shape and how to write it, per pydantic type-error kind.
_EXPECTED: dict[str, tuple[str, str]] = {
    "string": ("a string", 'write text, quoted when it has special characters: "..."'),
    "int": ("a whole number", "write digits only, e.g. 20"),
    "float": ("a number", "write a number such as 13 or 7.5"),
    "bool": ("true or false", "write true or false"),
    "dict": ("a mapping", "write 'key: value' lines indented under this key"),
    "model": ("a mapping", "write 'key: value' lines indented under this key"),
    "model_attributes": ("a mapping", "write 'key: value' lines indented under this key"),
    "list": ("a list", "write [a, b] or one '- item' line per entry"),
}
# pydantic bound error -> (ctx key, what the value must be, how to write it)
_BOUNDS = {
    "greater_than": ("gt", "greater than {}", "use a value above {}"),
    "greater_than_equal": ("ge", "at least {}", "use {} or more"),
    "less_than": ("lt", "less than {}", "use a value below {}"),
    "less_than_equal": ("le", "at most {}", "use {} or less"),
}
_NAME_RULE = "use lowercase letters, digits, '.', '_', ':' and '-', starting with a letter or digit"
_ENV_NAME_RULE = (
    "write the NAME of the environment variable (A-Z, 0-9, _), e.g. GEMINI_API_KEY, never its value"
)


@dataclass(frozen=True)
class Problem:
    """What is wrong at one place of a config file. ``str()`` is the line a person reads."""

    file: str
    line: int
    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " + (f"{self.path}: " if self.path else "")
        return where + self.message + (f"; {self.fix}" if self.fix else "")


def dotted(path: FieldPath) -> str:
    """``('stacks', 'a', 'members', 1)`` -> ``stacks.a.members[1]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def split_fix(text: str) -> tuple[str, str]:
    """Validators write 'what is wrong; how to fix it': split at the first '; '."""
    message, _, fix = text.partition("; ")
    return message, fix


def problems_from_errors(
    errors: Iterable[ErrorDetails], doc: YamlDocument, file: str, hidden: frozenset[FieldPath]
) -> list[Problem]:
    """One problem per pydantic error; a union's per-member type errors merge into one."""
    out: list[Problem] = []
    type_error_at: dict[FieldPath, int] = {}
    for error in errors:
        path = _data_path(error, doc.data)
        expectation = _type_expectation(error["type"])
        if expectation and path in type_error_at:
            # keep_alive: str | int fails once per member: say "expected a string or a whole number".
            index = type_error_at[path]
            earlier = out[index]
            message = earlier.message.replace(", got ", f" or {expectation[0]}, got ", 1)
            out[index] = replace(earlier, message=message)
            continue
        if expectation:
            type_error_at[path] = len(out)
        out.append(_translate(error, path, doc, file, hidden))
    return out


def _type_expectation(kind: str) -> tuple[str, str] | None:
    """(expected shape, how to write it) for a pydantic type error such as ``int_parsing``."""
    return _EXPECTED.get(kind.removesuffix("_type").removesuffix("_parsing").removesuffix("_from_float"))


def _data_path(error: ErrorDetails, data: object) -> FieldPath:
    """The part of pydantic's location that exists in the data, plus a missing field's name.

    What is left over are pydantic's own tags (``[key]``, union members such as ``int``).
    """
    path: list[str | int] = []
    node = data
    loc = error["loc"]
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            if error["type"] == "missing" and index == len(loc) - 1:
                path.append(part)
            break
        path.append(part)
    return tuple(path)


def _translate(
    error: ErrorDetails, path: FieldPath, doc: YamlDocument, file: str, hidden: frozenset[FieldPath]
) -> Problem:
    kind, ctx = error["type"], error.get("ctx") or {}
    last = path[-1] if path else ""
    is_key = "[key]" in error["loc"]
    shown = _show(error.get("input"), path, hidden)
    if kind == "extra_forbidden":
        message, fix = _unknown_key(path)
    elif kind == "missing":
        message, fix = "required field missing", f"add '{last}: ...'"
    elif kind in ("enum", "literal_error"):
        expected = ctx.get("expected", "")
        choices = [c.strip(" '") for c in expected.replace(" or ", ", ").split(",")]
        close = difflib.get_close_matches(str(error.get("input")), choices, n=1)
        message = f"invalid value {shown}"
        fix = f"must be one of {expected}" + (f" (did you mean '{close[0]}'?)" if close else "")
    elif kind == "string_pattern_mismatch":
        message, fix = _pattern_mismatch(str(last), is_key, shown, str(ctx.get("pattern")))
    elif kind in _BOUNDS:
        key, must, write = _BOUNDS[kind]
        bound = f"{ctx[key]:g}" if isinstance(ctx.get(key), int | float) else str(ctx.get(key))
        message, fix = f"must be {must.format(bound)} (got {shown})", write.format(bound)
        if last == "port" or (len(path) > 1 and path[-2] == "ports"):
            message, fix = f"is not a port (got {shown})", "use a port between 1 and 65535"
    elif kind == "string_too_long":
        limit = ctx.get("max_length")
        message, fix = f"is longer than {limit} characters", f"shorten it to {limit} characters or fewer"
    elif kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", error["msg"]))
        message, fix = split_fix(text.removeprefix("Value error, ").removeprefix("Assertion failed, "))
        if isinstance(error.get("input"), str | int | float):
            # A value check does not quote the value: it may be a secret from the environment.
            message += f" (got {shown})"
    elif expectation := _type_expectation(kind):
        expected, fix = expectation
        message = f"{'a name must be' if is_key else 'expected'} {expected}, got {shown}"
    else:
        message, fix = error["msg"][:1].lower() + error["msg"][1:], SCHEMA_HINT
    return Problem(file, doc.line_of(path), dotted(path), message, fix)


def _unknown_key(path: FieldPath) -> tuple[str, str]:
    last = path[-1]
    allowed = _allowed_keys(path[:-1])
    close = difflib.get_close_matches(str(last), allowed, n=1)
    hint = f"did you mean '{close[0]}'? otherwise " if close else ""
    return f"unknown key '{last}'", f"{hint}remove it or check the spelling (allowed: {', '.join(allowed)})"


def _pattern_mismatch(last: str, is_key: bool, shown: str, pattern: str) -> tuple[str, str]:
    env_name = last.endswith("_env")
    what = "environment variable name" if env_name else "name" if is_key else "value"
    if env_name:
        return f"{shown} is not a valid {what}", _ENV_NAME_RULE
    return f"{shown} is not a valid {what}", _NAME_RULE if "a-z0-9" in pattern else f"it must match {pattern}"


def _show(value: object, path: FieldPath, hidden: frozenset[FieldPath]) -> str:
    """A short description of the input; never the text of a hidden (possibly secret) value."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if path in hidden or (path and str(path[-1]).endswith("_env")):
        return "a value from the environment" if path in hidden else "a value (not shown: it may be a secret)"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(path: FieldPath) -> list[str]:
    model = _model_at(path)
    return sorted(model.model_fields) if model else []


def _model_at(path: FieldPath) -> type[BaseModel] | None:
    """The config model class that describes the mapping at ``path``."""
    current: object = StacksConfig
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: object) -> object:
    """Strip ``Annotated`` and ``| None``; of a real union keep the member that is a model."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            annotation = models[0] if models else members[0]
        else:
            return annotation
