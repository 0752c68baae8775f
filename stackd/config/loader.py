"""``model-stacks.yaml`` -> ``StacksConfig``, or every problem of the file at its line.

The steps, each of which adds problems instead of stopping at the first:

1. read the file (missing, unreadable, not UTF-8, empty);
2. parse YAML with line tracking (syntax errors stop here: nothing after them can be trusted);
   duplicate keys are problems, since PyYAML would silently keep the last one;
3. expand ``${VAR}`` / ``${VAR:-default}`` in string values; an unset VAR and a malformed
   reference (``${1BAD-NAME}``, no closing brace) are problems;
4. validate with the pydantic models, deferring cross-references;
5. check the references (unknown models and roles, shared containers, always-on VRAM above
   ``gpu.total_gb``, memory no machine has) on the expanded data, whether or not step 4
   passed: one run of ``config check`` tells everything.

A place has one problem, its first: a value whose ``${VAR}`` is unset is not also "not a URL",
and a name the schema refused is not also an "unknown model". ``load_config`` raises
``ConfigError`` carrying every ``Problem``, and no other exception, so a daemon reloading a bad
file keeps running on its old config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from stackd.config.architecture_files import fill_architectures
from stackd.config.envvars import Expansion, expand_env
from stackd.config.models import StacksConfig
from stackd.config.problems import Problem, dotted, problems_from_errors, split_fix
from stackd.config.references import check_references
from stackd.config.schema import json_schema
from stackd.config.yaml_source import TooLarge, UnreadableValue, YamlDocument, parse_yaml
from stackd.errors import ConfigError

__all__ = ["Problem", "check_file", "json_schema", "load_config"]

MAX_FILE_BYTES = 256 << 10  # the bundled config is 13 KB; PyYAML composes ~100 KB/s
_TOP_LEVEL = "version, default_stack, roles, models and stacks"
_SYNTAX_FIX = "check indentation, colons, brackets and quotes"
_SYNTAX_FIXES = {
    "'\\t'": "use spaces, not tabs, to indent",
    "recursive": "replace the alias (*name) with the values it should hold",
    "constructor for the tag": "remove the '!' tag: the config takes plain YAML values only",
    "single document": "keep one document: remove the extra '---'",
}


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> StacksConfig:
    """Load and validate a config file; ``env`` (default ``os.environ``) feeds ``${VAR}``.

    Raises ``ConfigError`` whose ``problems`` lists every problem found, in file order.
    """
    config, problems = _load(Path(path), os.environ if env is None else env)
    if problems or config is None:
        raise ConfigError(_summary(str(path), problems), problems)
    return config


def check_file(path: str | Path, env: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of a config file, in file order; an empty list when it is valid."""
    return _load(Path(path), os.environ if env is None else env)[1]


def _load(path: Path, env: Mapping[str, str]) -> tuple[StacksConfig | None, list[Problem]]:
    file = str(path)
    doc = _mapping(path, file)
    if isinstance(doc, Problem):
        return None, [doc]
    problems = [
        Problem(
            file,
            dup.line,
            dotted(dup.path),
            f"duplicate key '{dup.key}' (first at line {dup.first_line})",
            "names must be unique",
        )
        for dup in doc.duplicates
    ]
    expansion = expand_env(doc.data, env)
    env_problems = _environment_problems(expansion, doc, file)
    config: StacksConfig | None = None
    schema_problems: list[Problem] = []
    try:
        config = StacksConfig.model_validate(expansion.data, context={"defer_references": True})
    except ValidationError as exc:
        errors = problems_from_errors(exc.errors(), doc, file, expansion.from_environment)
        schema_problems = _first_at_each_path(env_problems, errors)
    references = [
        Problem(file, doc.line_of(ref_path), dotted(ref_path), *split_fix(text))
        for ref_path, text in check_references(expansion.data, expansion.from_environment)
    ]
    # A duplicate key is no reason to drop what is wrong with the value that YAML kept.
    problems += env_problems + schema_problems
    problems += _first_at_each_path(env_problems + schema_problems, references)
    if config is not None and not problems:
        # The architecture files (GGUF header, config.json) are read once the config is sound.
        config, found = fill_architectures(config, path.parent)
        problems += [
            Problem(file, doc.line_of(where), dotted(where), *split_fix(text)) for where, text in found
        ]
    problems.sort(key=lambda p: p.line)  # stable: problems of one line keep their order
    return (None if problems else config), problems


def _mapping(path: Path, file: str) -> YamlDocument | Problem:
    """The parsed file when it is a mapping of keys; else the one problem that says why not."""
    text = _read(path)
    if isinstance(text, Problem):
        return text
    doc = _parse(text, file)
    if isinstance(doc, Problem):
        return doc
    if doc.data is None:
        return Problem(file, 1, "", "the file is empty", f"write {_TOP_LEVEL} (see config/model-stacks.yaml)")
    if not isinstance(doc.data, dict):
        got = "a list" if isinstance(doc.data, list) else "a single value"
        return Problem(
            file,
            doc.line_of(()),
            "",
            f"the file must be a mapping of keys, got {got}",
            f"write top-level keys {_TOP_LEVEL}",
        )
    return doc


def _environment_problems(expansion: Expansion, doc: YamlDocument, file: str) -> list[Problem]:
    """An unset variable or a malformed ``${...}``, each at its line."""
    unset = [
        Problem(
            file,
            doc.line_of(unset.path),
            dotted(unset.path),
            f"environment variable {unset.name} is not set",
            f"set {unset.name} or write ${{{unset.name}:-default}}",
        )
        for unset in expansion.unset
    ]
    return unset + [
        Problem(file, doc.line_of(bad.path), dotted(bad.path), bad.message, bad.fix)
        for bad in expansion.malformed
    ]


def _first_at_each_path(earlier: list[Problem], later: list[Problem]) -> list[Problem]:
    """``later`` without the problems of a path that ``earlier`` already has one for."""
    taken = {p.path for p in earlier if p.path}
    return [p for p in later if not p.path or p.path not in taken]


def _read(path: Path) -> str | Problem:
    file = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # not the whole of a huge file (or of /dev/zero)
    except FileNotFoundError:
        return Problem(file, 1, "", "file not found", "check the path, e.g. config/model-stacks.yaml")
    except IsADirectoryError:
        return Problem(file, 1, "", "is a directory, not a file", "pass the path of the YAML file")
    except OSError as exc:
        return Problem(
            file, 1, "", f"cannot read the file: {exc.strerror or exc}", "check the file's permissions"
        )
    if len(raw) > MAX_FILE_BYTES:
        return Problem(
            file,
            1,
            "",
            f"the file is larger than {MAX_FILE_BYTES >> 10} KiB, more than any config needs",
            "check that this is the config file; split long text out of it",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad_byte = f"0x{raw[exc.start]:02x}"
        return Problem(file, line, "", f"not UTF-8 text (byte {bad_byte})", "save the file as UTF-8")


def _parse(text: str, file: str) -> YamlDocument | Problem:
    try:
        return parse_yaml(text)
    except TooLarge as exc:
        return Problem(
            file, exc.problem_mark.line + 1 if exc.problem_mark else 1, "", str(exc.problem), exc.fix
        )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or exc.context or "unreadable YAML"
        if exc.context and exc.problem:
            # "while parsing a flow mapping" + where it started: usually the line to fix.
            started = exc.context_mark.line + 1 if exc.context_mark else line
            what += f" ({exc.context}" + (f" that starts at line {started})" if started != line else ")")
        fix = next((f for key, f in _SYNTAX_FIXES.items() if key in what), _SYNTAX_FIX)
        # A tag's value has a place in the data: name its key, as every other problem does.
        path = dotted(exc.path) if isinstance(exc, UnreadableValue) else ""
        return Problem(file, line, path, f"YAML syntax error: {what}", fix)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        # A scalar the constructor rejects (an impossible date) has no mark.
        return Problem(file, 1, "", f"YAML could not be read: {exc}", "check the values' syntax")


def _summary(file: str, problems: list[Problem]) -> str:
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    return f"invalid config {file} ({count}):\n" + "\n".join(f"  {p}" for p in problems)
