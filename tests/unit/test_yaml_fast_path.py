"""libyaml reads a config as the pure-Python parser does, 6x faster (issue 25: start-up).

``parse_yaml`` composes libyaml's events with the bounded Python composer; a document libyaml
refuses is read again by the pure-Python parser, so a problem's words and line never depend on
which parser read the file. Every YAML file of the project (the bundled config, the examples,
every valid and broken fixture) gives the same data, lines and duplicates, or the same error,
both ways.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from stackd.config import yaml_source
from stackd.config.yaml_source import YamlDocument, parse_yaml

ROOT = Path(__file__).resolve().parents[2]
ALL_FILES = sorted([*ROOT.glob("config/**/*.yaml"), *ROOT.glob("tests/fixtures/**/*.yaml")])


def utf8(path: Path) -> bool:
    try:
        path.read_text()
    except UnicodeDecodeError:
        return False
    return True


# A fixture that is not UTF-8 is refused before any parser sees it (the config tests check that).
FILES = [path for path in ALL_FILES if utf8(path)]
BUNDLED = ROOT / "config" / "model-stacks.yaml"


def pure(text: str) -> YamlDocument:
    return yaml_source._parse_with(yaml_source._BoundedLoader(text))


def fast(text: str) -> YamlDocument:
    assert yaml_source._FAST_LOADER is not None
    return yaml_source._parse_with(yaml_source._FAST_LOADER(text))


def outcome(parse: object, text: str) -> object:
    assert callable(parse)
    try:
        return parse(text)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        return type(exc), getattr(exc, "problem", str(exc)), mark.line if mark else None


def test_this_pyyaml_has_libyaml() -> None:
    # Without it every start pays the pure-Python parser again (~0.1 s for the bundled config).
    assert yaml.__with_libyaml__ and yaml_source._FAST_LOADER is not None


def test_the_files_checked_include_valid_and_broken_configs() -> None:
    names = {f.name for f in FILES}
    assert {"model-stacks.yaml", "valid-minimal.yaml", "bad-tab-indent.yaml", "bad-alias-bomb.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_parse_yaml_gives_what_the_pure_python_parser_gives(path: Path) -> None:
    text = path.read_text()
    expected = outcome(pure, text)
    assert outcome(parse_yaml, text) == expected
    if isinstance(expected, YamlDocument):  # libyaml read it: its lines are the same too
        assert fast(text) == expected


def test_a_document_libyaml_refuses_is_reported_in_the_pure_parsers_words() -> None:
    text = "models:\n\tbad: 1\n"
    with pytest.raises(yaml.YAMLError) as c_error:
        fast(text)
    with pytest.raises(yaml.MarkedYAMLError) as reported:
        parse_yaml(text)
    assert "'\\t'" in str(reported.value.problem)  # the pure parser names the tab ...
    assert str(c_error.value) != str(reported.value)  # ... where libyaml's words differ


def test_the_bounds_hold_on_the_fast_path() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(yaml_source.TooLarge):
        fast(bomb)


def test_the_bundled_config_is_read_faster_than_by_the_pure_parser() -> None:
    text = BUNDLED.read_text()

    def best(parse: object) -> float:
        assert callable(parse)
        times = []
        for _ in range(3):
            began = time.perf_counter()
            parse(text)
            times.append(time.perf_counter() - began)
        return min(times)

    # ~20 ms against ~125 ms on an idle machine; only the order is asserted on a shared one.
    assert best(parse_yaml) * 2 < best(pure)
