"""The VRAM and RAM budgets of a target stack, and the refusals when it does not fit.

VRAM: ``committed = reserve + always-on + swap budget`` on ``config.gpu.device``, each GPU member
at its budget (its declaration, or its measurement when larger: ``planner/footprints.py``). The reserve is
the larger of ``gpu.reserve_gb`` and what foreign processes hold now. The planner cannot tell
which NVML processes are stackd's containers, so "foreign" is the device's used memory minus the
configured size of stackd's GPU members that are up, floored at 0.

RAM: always-on CPU members plus the largest on-demand one, against the RAM the host has
available plus what stackd's CPU members that stay already hold (their RAM is counted as used).
"""

from __future__ import annotations

from stackd.config.models import StacksConfig
from stackd.hardware.types import HardwareSnapshot
from stackd.planner.footprints import budget_mib, measured_of
from stackd.planner.members import MIB_PER_GIB, gib, is_cpu, is_gpu, is_on_demand, is_up
from stackd.planner.plan import LedgerItem, ObservedState, RamLedger, Refusal, VramLedger

_FIX_VRAM = (
    "move a model to on_demand or to the CPU, lower gpu.reserve_gb, or pick a stack with fewer GPU members"
)


def gpu_members(config: StacksConfig, stack: str) -> list[str]:
    return [n for n in config.stacks[stack].member_names if is_gpu(config.models[n])]


def vram_ledger(
    config: StacksConfig, stack: str, observed: ObservedState, hardware: HardwareSnapshot
) -> tuple[VramLedger | None, list[Refusal]]:
    """The GPU budget of ``stack``; None when no total is known (a refusal if the stack needs a GPU)."""
    device = hardware.gpu(config.gpu.device)
    members = gpu_members(config, stack)
    if config.gpu.total_gb is not None:
        total = round(config.gpu.total_gb * MIB_PER_GIB)
    elif device is not None:
        total = device.total_mib
    else:
        if not members:
            return None, []
        return None, [Refusal("no_gpu", _no_gpu_message(config, stack, members, hardware), members[0])]

    stackd_up = sum(
        budget_mib(n, m, observed) for n, m in config.models.items() if is_gpu(m) and is_up(n, m, observed)
    )
    foreign = max((device.used_mib if device else 0) - stackd_up, 0)
    configured_reserve = round(config.gpu.reserve_gb * MIB_PER_GIB)
    reserve = max(configured_reserve, foreign)
    always, groups = _vram_members(config, members, observed)
    largest = {group: max(items, key=lambda item: item[1]) for group, items in groups.items()}
    always_mib = sum(mib for _, mib in always)
    swap_mib = sum(mib for _, mib in largest.values())
    headroom = total - reserve - always_mib - swap_mib
    ledger = VramLedger(
        device=config.gpu.device,
        gpu_name=device.name if device else f"GPU {config.gpu.device}",
        total_mib=total,
        reserve_mib=reserve,
        always_on_mib=always_mib,
        swap_budget_mib=swap_mib,
        largest_swap_group=max(largest, key=lambda g: largest[g][1]) if largest else None,
        headroom_mib=headroom,
        items=_vram_items(config, observed, hardware, always, groups, foreign, stackd_up),
        simulated=hardware.simulated or config.gpu.total_gb is not None,
    )
    if headroom >= 0:
        return ledger, []
    return ledger, [_vram_refusal(config, stack, hardware, ledger, always, largest, stackd_up)]


_Budgets = list[tuple[str, int]]  # (member, its budget in MiB)


def _vram_members(
    config: StacksConfig, members: list[str], observed: ObservedState
) -> tuple[_Budgets, dict[str, _Budgets]]:
    """The always-on GPU members with their budgets, and the on-demand ones by swap group."""
    # A member measured larger than declared is budgeted at its measurement (planner/footprints.py).
    always = [
        (n, budget_mib(n, config.models[n], observed)) for n in members if not is_on_demand(config.models[n])
    ]
    groups: dict[str, _Budgets] = {}
    for name in members:
        model = config.models[name]
        if is_on_demand(model):
            # An on-demand model without a swap group only replaces itself: its own group.
            groups.setdefault(model.swap_group or name, []).append((name, budget_mib(name, model, observed)))
    return always, groups


def _vram_items(
    config: StacksConfig,
    observed: ObservedState,
    hardware: HardwareSnapshot,
    always: _Budgets,
    groups: dict[str, _Budgets],
    foreign: int,
    stackd_up: int,
) -> tuple[LedgerItem, ...]:
    """The ledger's lines: each member at its declared size, the configured reserve, foreign holders."""
    items = [
        LedgerItem(n, config.models[n].memory_mib, "always_on", measured_of(n, observed)) for n, _ in always
    ]
    items += [
        LedgerItem(n, config.models[n].memory_mib, "on_demand", measured_of(n, observed))
        for group in groups.values()
        for n, _ in group
    ]
    items.append(LedgerItem("gpu.reserve_gb", round(config.gpu.reserve_gb * MIB_PER_GIB), "reserve"))
    if foreign:
        holders = "foreign processes" + _process_list(hardware, config, stackd_up)
        items.append(LedgerItem(holders, foreign, "foreign"))
    return tuple(items)


def _vram_refusal(
    config: StacksConfig,
    stack: str,
    hardware: HardwareSnapshot,
    ledger: VramLedger,
    always: _Budgets,
    largest: dict[str, tuple[str, int]],
    stackd_up: int,
) -> Refusal:
    """Why ``stack`` does not fit ``ledger``: each part of what it needs, and the largest member to move."""
    total, headroom, reserve = ledger.total_mib, ledger.headroom_mib, ledger.reserve_mib
    parts = [f"{n} {gib(mib)} always-on" for n, mib in always]
    for group, (name, mib) in largest.items():
        grouped = group != name
        parts.append(f"{group} swap group {gib(mib)} ({name})" if grouped else f"{name} {gib(mib)} on-demand")
    # The reserve exceeds the configured one only when foreign processes hold more.
    if reserve > round(config.gpu.reserve_gb * MIB_PER_GIB):
        reserve_text = f"{gib(reserve)} held by other processes{_process_list(hardware, config, stackd_up)}"
    else:
        reserve_text = f"{gib(reserve)} reserve"
    biggest = max([*always, *largest.values()], key=lambda item: item[1], default=(None, 0))[0]
    parts.append(reserve_text)
    message = (
        f"{stack} needs {gib(total - headroom)} of VRAM ({', '.join(parts)}) but GPU {ledger.device} "
        f"({ledger.gpu_name}) has {gib(total)}: {gib(-headroom)} short; {_FIX_VRAM}"
    )
    return Refusal("vram", message, biggest)


def ram_ledger(
    config: StacksConfig, stack: str, observed: ObservedState, hardware: HardwareSnapshot
) -> tuple[RamLedger, list[Refusal]]:
    members = [n for n in config.stacks[stack].member_names if is_cpu(config.models[n])]
    always = [(n, config.models[n].memory_mib) for n in members if not is_on_demand(config.models[n])]
    on_demand = [(n, config.models[n].memory_mib) for n in members if is_on_demand(config.models[n])]
    largest = max(on_demand, key=lambda item: item[1], default=None)
    staying = sum(config.models[n].memory_mib for n in members if is_up(n, config.models[n], observed))
    always_mib = sum(mib for _, mib in always)
    largest_mib = largest[1] if largest else 0
    headroom = hardware.ram_available_mib + staying - always_mib - largest_mib
    measured = observed.measured_mib
    items = [LedgerItem(n, mib, "always_on", measured.get(n)) for n, mib in always]
    items += [LedgerItem(n, mib, "on_demand", measured.get(n)) for n, mib in on_demand]
    ledger = RamLedger(
        total_mib=hardware.ram_total_mib,
        available_mib=hardware.ram_available_mib,
        always_on_mib=always_mib,
        on_demand_max_mib=largest_mib,
        headroom_mib=headroom,
        items=tuple(items),
    )
    if headroom >= 0:
        return ledger, []
    parts = [f"{n} {gib(mib)} always-on" for n, mib in always]
    if largest:
        parts.append(f"largest on-demand {largest[0]} {gib(largest[1])}")
    held = f" + {gib(staying)} its loaded members already hold" if staying else ""
    message = (
        f"{stack} needs {gib(always_mib + largest_mib)} of RAM for its CPU models ({', '.join(parts)}) "
        f"but the host has {gib(hardware.ram_available_mib)} available{held} ({gib(hardware.ram_total_mib)} "
        f"total): {gib(-headroom)} short; free memory, make a CPU model on_demand, or pick a smaller stack"
    )
    biggest = max([*always, *on_demand], key=lambda item: item[1])[0]
    return ledger, [Refusal("ram", message, biggest)]


def _no_gpu_message(config: StacksConfig, stack: str, members: list[str], hardware: HardwareSnapshot) -> str:
    state = hardware.gpu_state if hardware.gpu_state != "ok" else f"GPU {config.gpu.device} is not present"
    cpu_stacks = [s for s in config.stacks if not gpu_members(config, s)]
    alternative = f", or pick a stack without GPU members ({', '.join(cpu_stacks)})" if cpu_stacks else ""
    return (
        f"{stack} runs {', '.join(members)} on the GPU but no GPU was found ({state}); set gpu.total_gb, "
        f"pass --gpu-total-gb N or --gpu-scenario FILE to plan for a card{alternative}"
    )


def _process_list(hardware: HardwareSnapshot, config: StacksConfig, stackd_up: int) -> str:
    device = hardware.gpu(config.gpu.device)
    # With stackd's own containers up, NVML's list mixes theirs and foreign ones: name none.
    if device is None or stackd_up or not device.processes:
        return ""
    top = sorted(device.processes, key=lambda p: p.used_mib, reverse=True)[:3]
    more = ", …" if len(device.processes) > len(top) else ""
    return " (" + ", ".join(f"{p.name} {gib(p.used_mib)}" for p in top) + more + ")"
