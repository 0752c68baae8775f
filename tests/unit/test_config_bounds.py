"""A config file cannot exhaust the daemon: alias expansion, nesting and size are bounded.

The 342-byte "billion laughs" below expands to 9^9 strings. Before the bound, ``config check``
ran ~40 s into a ``MemoryError`` and ``POST /config/reload`` blocked the event loop as long.
Now each file is refused at its line, in milliseconds, with one located problem.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from stackd.config.loader import MAX_FILE_BYTES, check_file
from stackd.config.yaml_source import MAX_DEPTH, MAX_VALUES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
BOMB = FIXTURES / "broken" / "bad-alias-bomb.yaml"


def refusal(path: Path) -> tuple[str, float]:
    started = time.perf_counter()
    problems = check_file(path, env={})
    elapsed = time.perf_counter() - started
    assert len(problems) == 1, [str(p) for p in problems]
    return str(problems[0]), elapsed


def test_the_342_byte_alias_bomb_is_refused_at_its_line_in_milliseconds() -> None:
    assert len(BOMB.read_bytes().split(b"\n", 2)[2]) == 342  # the probe's file, under two comment lines
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message, elapsed = refusal(BOMB)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert message.startswith(f"{BOMB}:8: this value holds more than {MAX_VALUES:,} values"), message
    assert "aliases" in message
    assert elapsed < 0.5
    assert grown_kib < 50_000  # the peak RSS grows by less than 50 MB (it used to reach GBs)


def test_aliases_within_the_bound_still_expand(tmp_path: Path) -> None:
    # 9^4 = 6,561 values: a large but legal expansion is validated like any other data.
    path = tmp_path / "aliases.yaml"
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abc", "bcd", strict=True)]
    path.write_text("\n".join(lines) + "\n")
    problems = check_file(path, env={})
    assert not any("aliases" in p.message for p in problems)
    assert any("unknown key 'a'" in p.message for p in problems)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deep_nesting_is_refused_where_it_goes_too_deep(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\nx: " + "[" * depth + "]" * depth + "\n")
    message, elapsed = refusal(path)
    assert message.startswith(f"{path}:2: the values are nested more than {MAX_DEPTH} levels deep"), message
    assert "RecursionError" not in message and elapsed < 0.5


def test_nesting_at_the_bound_is_accepted_by_the_parser(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    assert not any("nested" in p.message for p in check_file(path, env={}))


def test_a_file_over_the_size_bound_is_refused_without_being_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# " + b"x" * (10 * 1024 * 1024) + b"\n")  # 10 MB, as the reload probe sent
    message, elapsed = refusal(path)
    assert message == (
        f"{path}:1: the file is larger than {MAX_FILE_BYTES >> 10} KiB, more than any config needs; "
        "check that this is the config file; split long text out of it"
    )
    assert elapsed < 0.5


def test_an_endless_file_is_refused() -> None:
    message, _ = refusal(Path("/dev/zero"))
    assert "larger than" in message
