"""The checks of ``scripts/gpu-check``: pure functions over readings, one table of results.

``gpu_check_run`` (the shell around them) starts a daemon whose members are real GPU processes
(``stackd.sim.cuda_engine``), drives leases through its API, and reads the card three ways: the
daemon's own view (``GET /status``), NVML directly (pynvml, not stackd's reader) and
``nvidia-smi --query-compute-apps``. Each function here compares such readings and returns
``Check`` rows; none does I/O, so the unit tests feed them scripted devices
(``stackd.hardware.scenario``) and every verdict, and its wording, is tested without a GPU.

Tolerances, and why:

- a footprint is within ``FOOTPRINT_TOLERANCE`` (2 %) of what the engine allocated plus the
  context overhead measured on this card first (an engine with ``--mib 0``): the driver rounds
  allocations up to its page size and the context grows a little with its first kernels;
- the daemon's free memory is within ``FREE_DRIFT_MIB`` of NVML's: the two reads are a few
  milliseconds apart, and anything else on the card (a desktop) may allocate between them;
- the total is equal: it is a constant of the card.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stackd.hardware.types import GpuDevice

FOOTPRINT_TOLERANCE = 0.02
FREE_DRIFT_MIB = 64


@dataclass(frozen=True)
class Check:
    """One row of the table: what was compared, what was expected and measured, the verdict."""

    name: str
    expected: str
    measured: str
    ok: bool


def within(measured: float, expected: float, tolerance: float = FOOTPRINT_TOLERANCE) -> bool:
    return abs(measured - expected) <= tolerance * max(expected, 1.0)


def held_by(device: GpuDevice, pid: int) -> int | None:
    """MiB NVML reports for ``pid`` on ``device``; None when the process holds nothing there."""
    return next((p.used_mib for p in device.processes if p.pid == pid), None)


def check_probe(daemon_total_mib: int, daemon_free_mib: int, nvml: GpuDevice) -> list[Check]:
    """The daemon's probe of the card against NVML read right after it."""
    drift = abs(daemon_free_mib - nvml.free_mib)
    return [
        Check(
            "probe: total",
            f"{nvml.total_mib} MiB (NVML)",
            f"{daemon_total_mib} MiB",
            daemon_total_mib == nvml.total_mib,
        ),
        Check(
            "probe: free",
            f"{nvml.free_mib} MiB (NVML) ± {FREE_DRIFT_MIB}",
            f"{daemon_free_mib} MiB",
            drift <= FREE_DRIFT_MIB,
        ),
    ]


def context_overhead(calibration: GpuDevice, pid: int) -> int | None:
    """What a CUDA context alone holds on this card: the NVML figure of an engine with --mib 0."""
    return held_by(calibration, pid)


def check_footprint(
    member: str, pid: int, allocated_mib: int, overhead_mib: int, nvml: GpuDevice, daemon_mib: int | None
) -> list[Check]:
    """A member's engine holds what it allocated plus one context (NVML per PID), and the daemon
    measured the same figure (its footprint of the member)."""
    expected = allocated_mib + overhead_mib
    found = held_by(nvml, pid)
    if found is None:
        return [
            Check(f"footprint: {member}", f"{expected} MiB", f"pid {pid} holds no GPU memory in NVML", False)
        ]
    rows = [
        Check(
            f"footprint: {member}",
            f"{allocated_mib} + {overhead_mib} context = {expected} MiB ± 2%",
            f"{found} MiB (pid {pid})",
            within(found, expected),
        )
    ]
    measured = "not measured" if daemon_mib is None else f"{daemon_mib} MiB"
    rows.append(
        Check(
            f"daemon measures: {member}",
            f"{found} MiB (NVML) ± 2%",
            measured,
            daemon_mib is not None and within(daemon_mib, found),
        )
    )
    return rows


def check_eviction(
    before: GpuDevice,
    after: GpuDevice,
    pids_before: Mapping[str, int],
    pids_after: Mapping[str, int],
    expected_evicted: str,
    started: str,
) -> list[Check]:
    """A lease on ``started`` that needed room evicted exactly ``expected_evicted`` (the smallest
    idle member that covers the deficit, not the least recently used) and the card's used memory
    moved by what the two engines hold."""
    evicted = sorted(n for n, pid in pids_before.items() if pids_after.get(n) != pid and n != started)
    rows = [
        Check(
            "eviction: members stopped",
            expected_evicted,
            ", ".join(evicted) or "none",
            evicted == [expected_evicted],
        )
    ]
    gone_pid = pids_before.get(expected_evicted)
    freed = held_by(before, gone_pid) if gone_pid is not None else None
    still = held_by(after, gone_pid) if gone_pid is not None else None
    rows.append(
        Check(
            f"eviction: {expected_evicted} memory freed",
            f"pid {gone_pid} gone from NVML ({freed} MiB)",
            "gone" if still is None else f"still holds {still} MiB",
            gone_pid is not None and freed is not None and still is None,
        )
    )
    new_pid = pids_after.get(started)
    added = held_by(after, new_pid) if new_pid is not None else None
    if freed is None or added is None:
        rows.append(Check("eviction: used memory moved", "evicted and started both seen", "missing", False))
        return rows
    expected = before.used_mib - freed + added
    rows.append(
        Check(
            "eviction: card used after",
            f"{before.used_mib} - {freed} + {added} = {expected} MiB ± {FREE_DRIFT_MIB}",
            f"{after.used_mib} MiB",
            abs(after.used_mib - expected) <= FREE_DRIFT_MIB,
        )
    )
    return rows


def check_wait(
    member: str,
    queued: bool,
    granted: bool,
    released_at: float,
    granted_at: float | None,
    served: GpuDevice,
    pid: int | None,
) -> list[Check]:
    """A lease that had to wait (every candidate held) was in the queue, then granted after the
    holder released, and its engine then held memory."""
    after = None if granted_at is None else granted_at - released_at
    return [
        Check(
            f"lease wait: {member} queued",
            "in GET /leases queue while held",
            "queued" if queued else "never queued",
            queued,
        ),
        Check(
            f"lease wait: {member} served",
            "granted after the holder's release",
            "refused" if not granted or after is None else f"granted {after:.1f} s after it",
            granted and after is not None and after >= 0,
        ),
        Check(
            f"lease wait: {member} resident",
            "its engine in NVML",
            "no engine" if pid is None else f"pid {pid}: {held_by(served, pid) or 0} MiB",
            pid is not None and held_by(served, pid) is not None,
        ),
    ]


def parse_compute_apps(text: str) -> dict[int, int]:
    """``nvidia-smi --query-compute-apps=pid,used_memory --format=csv[,noheader][,nounits]`` ->
    pid -> MiB. Rows nvidia-smi cannot attribute ("[N/A]") are left out."""
    out: dict[int, int] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 2:
            continue
        pid, used = row[0].strip(), row[1].strip().removesuffix("MiB").strip()
        if pid.isdigit() and used.isdigit():
            out[int(pid)] = int(used)
    return out


def check_ledger(members: Mapping[str, tuple[int, int | None]], smi: Mapping[int, int]) -> list[Check]:
    """What the daemon measured for each running member (name -> (pid, MiB)) against nvidia-smi,
    member by member and in total."""
    rows = []
    for name, (pid, measured) in sorted(members.items()):
        seen = smi.get(pid)
        rows.append(
            Check(
                f"ledger: {name}",
                "not listed" if seen is None else f"{seen} MiB (nvidia-smi, pid {pid}) ± 2%",
                "not measured" if measured is None else f"{measured} MiB",
                seen is not None and measured is not None and within(measured, seen),
            )
        )
    ours = sum(smi.get(pid, 0) for pid, _ in members.values())
    total = sum(m or 0 for _, m in members.values())
    rows.append(
        Check(
            "ledger: members in total", f"{ours} MiB (nvidia-smi) ± 2%", f"{total} MiB", within(total, ours)
        )
    )
    return rows


def render(checks: Iterable[Check], title: str = "") -> str:
    """The table a person reads: one row per check, then the count of failures."""
    rows = list(checks)
    header = ("check", "expected", "measured", "")
    table = [header, *((c.name, c.expected, c.measured, "ok" if c.ok else "MISMATCH") for c in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [title] if title else []
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    failed = sum(not c.ok for c in rows)
    lines.append(
        f"{len(rows) - failed} of {len(rows)} checks passed" + (f"; {failed} MISMATCH" if failed else "")
    )
    return "\n".join(lines)


def exit_status(checks: Iterable[Check]) -> int:
    """0 when every check passed, 1 on any mismatch."""
    return 0 if all(c.ok for c in checks) else 1
