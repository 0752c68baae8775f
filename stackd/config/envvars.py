"""``${VAR}`` and ``${VAR:-default}`` in the string values of a config.

Expansion happens on plain data, before validation, so a value that came from the
environment is validated like one written in the file. Only values are expanded, never keys
(names must be readable in the file). ``${VAR:-default}`` follows the shell: the default is
used when VAR is unset or empty. The paths whose text came from the environment are
returned, so that error messages never echo them: a URL may carry a token.

A ``${`` that does not start a valid reference (no closing brace, a name such as ``1BAD-NAME``)
is listed as malformed and left as written: silently keeping it would send ``${OLLAMA_HOST:-http://…``
to an HTTP client at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from stackd.config.yaml_source import FieldPath

# A reference, or else a bare "${" that starts none (group 1 is None).
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_SYNTAX = "write ${NAME} or ${NAME:-default}, NAME of letters, digits and '_', not starting with a digit"


@dataclass(frozen=True)
class UnsetVariable:
    path: FieldPath
    name: str


@dataclass(frozen=True)
class MalformedReference:
    """A ``${`` in a value that is not a valid reference: ``message`` and ``fix`` say why."""

    path: FieldPath
    message: str
    fix: str


@dataclass(frozen=True)
class Expansion:
    """Data with references replaced; unset and malformed references are left as written (and listed)."""

    data: object
    unset: list[UnsetVariable] = field(default_factory=list)
    from_environment: frozenset[FieldPath] = frozenset()
    malformed: list[MalformedReference] = field(default_factory=list)


def is_process_macro(path: FieldPath, name: str) -> bool:
    """``${PORT}`` & co. in a model's ``process:`` section or ``endpoint`` belong to the process
    runtime, which fills them in at each start; they are not environment variables."""
    from stackd.config.fields import PROCESS_MACROS

    if name == "GPU_MEMORY_UTILIZATION":  # filled in from the plan's KV table (stackd.planner.kv)
        return len(path) >= 3 and path[0] == "models" and path[2] in ("process", "docker")
    in_model = len(path) >= 3 and path[0] == "models" and path[2] in ("process", "endpoint")
    return in_model and name in PROCESS_MACROS


def expand_env(data: object, env: Mapping[str, str]) -> Expansion:
    """Expand every reference in the string values of ``data`` (which is not modified)."""
    unset: list[UnsetVariable] = []
    malformed: list[MalformedReference] = []
    from_env: set[FieldPath] = set()

    def expand_text(text: str, path: FieldPath) -> str:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name is None:
                malformed.append(_malformed(text, match.start(), path))
                return match.group(0)
            if is_process_macro(path, name):
                return match.group(0)
            value = env.get(name)
            if value:
                from_env.add(path)
                return value
            if default is not None:
                return default
            if value is None:
                unset.append(UnsetVariable(path, name))
                return match.group(0)
            from_env.add(path)  # set but empty, no default: the empty string is the value
            return value

        return _REFERENCE.sub(replace, text)

    def walk(value: object, path: FieldPath) -> object:
        if isinstance(value, str):
            return expand_text(value, path)
        if isinstance(value, dict):
            return {key: walk(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*path, index)) for index, item in enumerate(value)]
        return value

    expanded = walk(data, ())
    return Expansion(data=expanded, unset=unset, from_environment=frozenset(from_env), malformed=malformed)


def _malformed(text: str, start: int, path: FieldPath) -> MalformedReference:
    """Why the ``${`` at ``start`` of ``text`` (written in the file, never a value) is no reference."""
    close, reopen = text.find("}", start), text.find("${", start + 2)
    if close < 0 or 0 <= reopen < close:
        written = text[start : len(text) if reopen < 0 else reopen].rstrip()
        fix = f"end it with '}}': {written}}}" if len(written) <= 60 else f"end it with '}}'; {_SYNTAX}"
        return MalformedReference(path, f"'{_clip(written)}' has no closing '}}'", fix)
    name = text[start + 2 : close].partition(":-")[0]
    written = _clip(text[start : close + 1])
    if not name:
        return MalformedReference(path, f"'{written}' names no variable", _SYNTAX)
    return MalformedReference(path, f"'{_clip(name)}' in '{written}' is not a valid variable name", _SYNTAX)


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
