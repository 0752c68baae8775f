"""pydantic's errors become sentences with a fix, at the line of the field they are about."""

from __future__ import annotations

from pathlib import Path

from stackd.config.loader import check_file
from stackd.config.problems import dotted, split_fix

MINIMAL = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "configs" / "valid-minimal.yaml"


def problems_after(tmp_path: Path, old: str, new: str) -> list[str]:
    text = MINIMAL.read_text()
    assert old in text
    path = tmp_path / "c.yaml"
    path.write_text(text.replace(old, new, 1))
    return [str(p).removeprefix(f"{path}:") for p in check_file(path, env={})]


def test_dotted_paths_index_lists_with_brackets() -> None:
    assert dotted(("stacks", "elastic-hybrid", "roles", "vision")) == "stacks.elastic-hybrid.roles.vision"
    assert dotted(("reason", "effort", 0, "chain", 2)) == "reason.effort[0].chain[2]"
    assert dotted(()) == ""


def test_split_fix_keeps_later_semicolons_in_the_fix() -> None:
    assert split_fix("bad; do a; then b") == ("bad", "do a; then b")
    assert split_fix("no fix here") == ("no fix here", "")


def test_union_members_merge_into_one_problem(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "options: {num_gpu: 0}}", "options: {num_gpu: 0}, keep_alive: [1]}")
    assert problems == [
        "30: models.elastic-12b.ollama.keep_alive: expected a string or a whole number, got a list; "
        'write text, quoted when it has special characters: "..."'
    ]


def test_a_bad_name_as_a_mapping_key(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "  elastic-12b:\n", "  Elastic 12B:\n")
    assert problems[0] == (
        "25: models.Elastic 12B: 'Elastic 12B' is not a valid name; use lowercase letters, digits, "
        "'.', '_', ':' and '-', starting with a letter or digit"
    )


def test_numeric_bounds_name_the_limit(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "reserve_gb: 3", "reserve_gb: -1")
    assert problems == ["5: gpu.reserve_gb: must be at least 0 (got -1); use 0 or more"]
    problems = problems_after(tmp_path, "total_gb: 32", "total_gb: 0")
    assert problems == ["5: gpu.total_gb: must be greater than 0 (got 0); use a value above 0"]


def test_a_scalar_where_a_section_belongs(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "docker: {container: aether-vision}", "docker: aether-vision")
    assert problems == [
        "24: models.vision-qwen.docker: expected a mapping, got 'aether-vision'; "
        "write 'key: value' lines indented under this key"
    ]


def test_model_level_rule_without_own_line_uses_the_models_key(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "    lifecycle: on_demand\n", "    swap_group: creative\n")
    assert problems == [
        "17: models.vision-qwen: swap_group applies to on_demand models; "
        "set lifecycle: on_demand or drop swap_group"
    ]
