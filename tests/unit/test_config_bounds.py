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
    # Refused while reading, not after building 100,000 levels: seconds would mean the bound is
    # checked too late (a loose bound: these machines are shared and noisy; bench/ has the speed).
    assert "RecursionError" not in message and elapsed < 5


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


# Values that the types accepted but no one means. Each case edits valid-minimal.yaml and must be
# refused with one problem at its own line, naming its key, with a fix.
MINIMAL = (FIXTURES / "valid-minimal.yaml").read_text()
_OLLAMA = 'ollama: {tag: "nemotron-elastic:12b", options: {num_gpu: 0}}'
_ON_DEMAND = "    lifecycle: on_demand\n"


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "model-stacks.yaml"
    path.write_text(text)
    message, _ = refusal(path)
    assert message.startswith(f"{path}:"), message
    return message.removeprefix(f"{path}:")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # The probe: no call would ever time out.
        (
            ("", "reason:\n  timeouts: {total_s: 1e300}\n"),
            "44: reason.timeouts.total_s: must be at most 86400",
        ),
        (
            ("", "reason:\n  timeouts: {first_token_s: .inf}\n"),
            "44: reason.timeouts.first_token_s: must be at most 86400 (got inf)",
        ),
        (
            ("", "reason:\n  timeouts: {connect_s: 600}\n"),
            "44: reason.timeouts.connect_s: must be at most 300 (got 600)",
        ),
        (
            ("", "reason:\n  circuit: {cooldown_s: 1.0e12}\n"),
            "44: reason.circuit.cooldown_s: must be at most 86400",
        ),
        (
            (_ON_DEMAND, _ON_DEMAND + "    idle_ttl_s: 31536000\n"),
            "24: models.vision-qwen.idle_ttl_s: must be at most 86400",
        ),
        (
            (_ON_DEMAND, _ON_DEMAND + "    health: {start_timeout_s: 1.0e300}\n"),
            "24: models.vision-qwen.health.start_timeout_s: must be at most 86400",
        ),
        (
            (_ON_DEMAND, _ON_DEMAND + "    health: {interval_s: 86400}\n"),
            "24: models.vision-qwen.health.interval_s: must be at most 3600",
        ),
        (
            ("{container: aether-vision}", "{container: aether-vision, stop_timeout_s: 99999}"),
            "24: models.vision-qwen.docker.stop_timeout_s: must be at most 3600",
        ),
        (
            (_OLLAMA, _OLLAMA[:-1] + ", keep_alive: 1.0e300}"),
            "30: models.elastic-12b.ollama.keep_alive: is longer than a day",
        ),
    ],
)
def test_a_duration_past_its_bound_is_refused_at_its_key(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    text = MINIMAL + new if not old else MINIMAL.replace(old, new, 1)
    assert text != MINIMAL
    message = refused(tmp_path, text)
    assert message.startswith(expected), message
    assert "; " in message.partition(": ")[2]  # what is wrong; how to fix it


def test_durations_at_their_bounds_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "model-stacks.yaml"
    path.write_text(
        MINIMAL.replace(_ON_DEMAND, _ON_DEMAND + "    idle_ttl_s: 86400\n    health: {interval_s: 3600}\n")
        + "reason:\n  timeouts: {connect_s: 300, first_token_s: 86400, total_s: 86400}\n"
    )
    assert check_file(path, env={}) == []


def test_fallback_stacks_repeating_a_stack_or_the_default_are_refused_at_the_item(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "default_stack: main\n", "default_stack: main\nfallback_stacks:\n  - main\n  - cpu\n  - cpu\n"
    )
    text += "  cpu:\n    roles: {orchestrator: orchestrator-8b}\n"
    path = tmp_path / "model-stacks.yaml"
    path.write_text(text)
    assert [str(p).removeprefix(f"{path}:") for p in check_file(path, env={})] == [
        "6: fallback_stacks[0]: 'main' is the default_stack, which is tried first; remove it from fallback_stacks",
        "8: fallback_stacks[2]: 'cpu' is listed twice (first as fallback_stacks[1]); remove the repeat",
    ]
    path.write_text(text.replace("  - main\n  - cpu\n  - cpu\n", "  - cpu\n"))
    assert check_file(path, env={}) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("memory_gb: 8", "memory_gb: !mytag 3", "22: models.vision-qwen.memory_gb: YAML syntax error: "),
        (
            "members: [elastic-12b, gemini-flash]",
            "members: [elastic-12b, !x gemini-flash]",
            "42: stacks.main.members[1]: ",
        ),
        ("  vision: {}", "  vision: !set {a: 1}", "8: roles.vision: "),
    ],
)
def test_an_unknown_tag_is_refused_naming_its_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = refused(tmp_path, MINIMAL.replace(old, new, 1))
    assert message.startswith(expected), message
    assert "could not determine a constructor for the tag" in message
    assert message.endswith("; remove the '!' tag: the config takes plain YAML values only")
