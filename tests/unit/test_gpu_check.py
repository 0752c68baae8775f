"""scripts/gpu-check's verdicts, against scripted NVML (no GPU needed).

The check runs on a machine with an NVIDIA driver (docs/operations.md); every comparison it makes
is a pure function of ``stackd.hardware.gpu_check`` over ``GpuDevice`` readings, so here the
readings come from scenario files (``stackd.hardware.scenario``), as the daemon's scripted GPU
does, and each verdict is checked both ways: a true reading passes, a reading off by more than
its tolerance is a MISMATCH that makes the script exit 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stackd.config.loader import load_config
from stackd.gpu.eviction import Candidate, cheapest_eviction
from stackd.hardware.gpu_check import (
    check_eviction,
    check_footprint,
    check_ledger,
    check_probe,
    check_wait,
    context_overhead,
    exit_status,
    parse_compute_apps,
    render,
)
from stackd.hardware.gpu_check_run import ALLOCATIONS, budget_mib, write_config
from stackd.hardware.gpu_check_run import main as gpu_check_main
from stackd.hardware.scenario import ScenarioReader
from stackd.hardware.types import GpuDevice
from stackd.sim.cuda_engine import CudaError, hold_memory

H100_MIB = 81559
CONTEXT_MIB = 504  # what an H100's CUDA context alone holds (an input of these scenarios)
DESKTOP = {"pid": 1200, "name": "Xorg", "used_mib": 300}


def card(tmp_path: Path, processes: dict[int, int], name: str = "card") -> GpuDevice:
    """A scripted H100 whose engines (pid -> MiB) and a desktop hold memory."""
    path = tmp_path / f"{name}.yaml"
    scripted = [DESKTOP, *({"pid": p, "name": "python", "used_mib": m} for p, m in processes.items())]
    path.write_text(
        yaml.safe_dump(
            {"devices": [{"name": "NVIDIA H100 80GB HBM3", "total_mib": H100_MIB, "processes": scripted}]}
        )
    )
    devices, state = ScenarioReader(path).read()
    assert state == "ok"
    return devices[0]


def test_the_probe_matches_nvml_and_a_drifted_free_is_a_mismatch(tmp_path: Path) -> None:
    nvml = card(tmp_path, {4000: 760})
    assert [c.ok for c in check_probe(H100_MIB, nvml.free_mib - 20, nvml)] == [True, True]
    total, free = check_probe(H100_MIB - 1024, nvml.free_mib - 500, nvml)
    assert (total.ok, free.ok) == (False, False)
    assert free.expected == f"{H100_MIB - 1060} MiB (NVML) ± 64" and free.measured == f"{H100_MIB - 1560} MiB"


def test_the_context_overhead_is_what_an_empty_engine_holds(tmp_path: Path) -> None:
    assert context_overhead(card(tmp_path, {4000: CONTEXT_MIB}), 4000) == CONTEXT_MIB
    assert context_overhead(card(tmp_path, {}), 4000) is None


def test_a_footprint_within_two_percent_passes_and_beyond_it_does_not(tmp_path: Path) -> None:
    expected = 1536 + CONTEXT_MIB
    ok = check_footprint("b", 4001, 1536, CONTEXT_MIB, card(tmp_path, {4001: expected + 30}), expected + 30)
    assert [(c.name, c.ok) for c in ok] == [("footprint: b", True), ("daemon measures: b", True)]
    assert ok[0].expected == f"1536 + {CONTEXT_MIB} context = {expected} MiB ± 2%"
    assert ok[0].measured == f"{expected + 30} MiB (pid 4001)"
    over = check_footprint("b", 4001, 1536, CONTEXT_MIB, card(tmp_path, {4001: expected + 50}), expected + 50)
    assert over[0].ok is False  # 50 MiB over 2040 is 2.5 %
    unmeasured = check_footprint("b", 4001, 1536, CONTEXT_MIB, card(tmp_path, {4001: expected}), None)
    assert unmeasured[1].ok is False and unmeasured[1].measured == "not measured"
    missing = check_footprint("b", 4001, 1536, CONTEXT_MIB, card(tmp_path, {}), expected)
    assert [c.measured for c in missing] == ["pid 4001 holds no GPU memory in NVML"]


def test_an_eviction_of_the_smallest_member_that_frees_its_memory_passes(tmp_path: Path) -> None:
    a, b, c = 512 + CONTEXT_MIB, 1536 + CONTEXT_MIB, 1024 + CONTEXT_MIB
    before = card(tmp_path, {4000: 760, 4001: a, 4002: b}, "before")
    after = card(tmp_path, {4000: 760, 4002: b, 4003: c}, "after")
    rows = check_eviction(
        before,
        after,
        {"resident": 4000, "a": 4001, "b": 4002},
        {"resident": 4000, "b": 4002, "c": 4003},
        "a",
        "c",
    )
    assert all(r.ok for r in rows), render(rows)
    assert rows[2].expected == f"{before.used_mib} - {a} + {c} = {before.used_mib - a + c} MiB ± 64"


def test_an_lru_eviction_or_memory_left_behind_is_a_mismatch(tmp_path: Path) -> None:
    a, b, c = 512 + CONTEXT_MIB, 1536 + CONTEXT_MIB, 1024 + CONTEXT_MIB
    before = card(tmp_path, {4000: 760, 4001: a, 4002: b}, "before")
    lru = card(tmp_path, {4000: 760, 4001: a, 4003: c}, "lru")
    rows = check_eviction(
        before,
        lru,
        {"resident": 4000, "a": 4001, "b": 4002},
        {"resident": 4000, "a": 4001, "c": 4003},
        "a",
        "c",
    )
    assert [(r.measured, r.ok) for r in rows[:2]] == [("b", False), (f"still holds {a} MiB", False)]
    # The daemon says A stopped, but its engine still holds its memory (a leaked process).
    leaked = card(tmp_path, {4000: 760, 4001: a, 4002: b, 4003: c}, "leaked")
    rows = check_eviction(
        before,
        leaked,
        {"resident": 4000, "a": 4001, "b": 4002},
        {"resident": 4000, "b": 4002, "c": 4003},
        "a",
        "c",
    )
    assert [r.ok for r in rows] == [True, False, False]


def test_a_lease_that_waited_and_was_served(tmp_path: Path) -> None:
    served = card(tmp_path, {4005: 1016})
    assert all(c.ok for c in check_wait("a", True, True, 100.0, 100.4, served, 4005))
    assert check_wait("a", True, True, 100.0, 100.4, served, 4005)[1].measured == "granted 0.4 s after it"
    never = check_wait("a", False, False, 100.0, None, card(tmp_path, {}), None)
    assert [c.ok for c in never] == [False, False, False]


def test_nvidia_smi_csv_with_and_without_header_and_units() -> None:
    text = "pid, used_gpu_memory [MiB]\n4000, 760 MiB\n4001, 1016 MiB\n4009, [N/A]\n"
    assert parse_compute_apps(text) == {4000: 760, 4001: 1016}
    assert parse_compute_apps("4000, 760\n") == {4000: 760}
    assert parse_compute_apps("") == {}


def test_the_ledger_against_nvidia_smi_member_by_member_and_in_total() -> None:
    smi = {4000: 760, 4002: 2040, 9999: 300}
    rows = check_ledger({"resident": (4000, 760), "b": (4002, 2040)}, smi)
    assert [(r.name, r.ok) for r in rows] == [
        ("ledger: b", True),
        ("ledger: resident", True),
        ("ledger: members in total", True),
    ]
    rows = check_ledger({"resident": (4000, 760), "b": (4002, 1500), "c": (4003, 1528)}, smi)
    assert [r.ok for r in rows] == [False, False, True, False]
    assert rows[1].expected == "not listed" and rows[3].expected == "2800 MiB (nvidia-smi) ± 2%"


def test_the_table_counts_failures_and_sets_the_exit_status(tmp_path: Path) -> None:
    nvml = card(tmp_path, {})
    good = check_probe(H100_MIB, nvml.free_mib, nvml)
    assert exit_status(good) == 0 and render(good).endswith("2 of 2 checks passed")
    bad = [*good, *check_probe(1, nvml.free_mib, nvml)]
    table = render(bad, title="stackd gpu-check on NVIDIA H100 80GB HBM3 (device 0)")
    assert exit_status(bad) == 1
    assert table.splitlines()[0] == "stackd gpu-check on NVIDIA H100 80GB HBM3 (device 0)"
    assert table.endswith("3 of 4 checks passed; 1 MISMATCH")
    assert sum("MISMATCH" in line for line in table.splitlines()) == 2  # the row and the count


def test_the_generated_config_loads_and_its_card_forces_the_size_aware_eviction(tmp_path: Path) -> None:
    path = tmp_path / "gpu-check.yaml"
    budgets = write_config(path, CONTEXT_MIB, used_now=300, device=0)
    config = load_config(path, env={})
    assert {n: m.memory_mib for n, m in config.models.items()} == budgets
    assert budgets["a"] == budget_mib(ALLOCATIONS["a"], CONTEXT_MIB) == 1024  # 1016 rounded up to 64
    room = round((config.gpu.total_gb or 0) * 1024) - 300
    deficit = sum(budgets.values()) - room
    assert 0 < deficit <= budgets["a"]  # A, B and C do not fit together; stopping A alone is enough
    # B is the least recently used, A the most: size, not recency, picks A.
    chosen = cheapest_eviction(
        [Candidate("b", budgets["b"], 10.0), Candidate("a", budgets["a"], 20.0)], deficit
    )
    assert chosen is not None and [c.model for c in chosen] == ["a"]
    assert config.models["c"].process is not None
    assert config.models["c"].process.command[:3] == ["${PYTHON}", "-m", "stackd.sim.cuda_engine"]


def test_the_engine_without_a_driver_says_what_is_missing() -> None:
    with pytest.raises(
        CudaError, match=r"^libcuda-absent\.so\.1 not found: this engine needs an NVIDIA driver"
    ):
        hold_memory(8, library="libcuda-absent.so.1")


def test_the_script_without_nvml_exits_2_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver here: what this test is about
        pass
    else:
        pytest.skip("an NVIDIA driver is present: scripts/gpu-check would run for real")
    assert gpu_check_main([]) == 2
    assert capsys.readouterr().err.startswith("gpu-check: cannot run: NVML: ")
