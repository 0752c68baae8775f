"""``plan_switch(config, observed, target, hardware) -> Plan``: the planner's entry point.

Pure: no I/O, no clock, no logging, no globals. Given the same inputs it returns the same plan,
so hypothesis can check its invariants without Docker (tests/property/test_planner_properties.py).

A plan is feasible when the target binds an always-on orchestrator, its VRAM and RAM ledgers
have headroom, and some order of its steps keeps every start within the card (see
``ordering``). An infeasible plan still carries the steps it would take, for a dry run to show,
and a refusal per reason; the manager never applies it.
"""

from __future__ import annotations

from stackd.config.models import StacksConfig
from stackd.errors import NotFound
from stackd.hardware.types import HardwareSnapshot
from stackd.planner.cluster import cluster_ledger
from stackd.planner.kv import kv_rows
from stackd.planner.ledgers import ram_ledger, vram_ledger
from stackd.planner.members import ORCHESTRATOR, gib, is_on_demand
from stackd.planner.ordering import MAKE_BEFORE_BREAK, ORDERINGS, order_steps
from stackd.planner.plan import ObservedState, Plan, Refusal, Step, VramLedger
from stackd.planner.simulate import (
    bindings_after_each_step,
    first_overflow,
    gpu_residents_after_each_step,
    simulate_vram,
    vram_in_use,
)

__all__ = ["ORCHESTRATOR", "bindings_after_each_step", "plan_switch", "simulate_vram"]


def plan_switch(
    config: StacksConfig, observed: ObservedState, target: str, hardware: HardwareSnapshot
) -> Plan:
    """Plan the switch from ``observed`` to stack ``target``. Raises ``NotFound`` for an unknown stack."""
    if target not in config.stacks:
        raise NotFound(f"unknown stack '{target}'; valid stacks: {', '.join(config.stacks)}")
    refusals = _orchestrator_refusals(config, target)
    vram, vram_refusals = vram_ledger(config, target, observed, hardware)
    ram, ram_refusals = ram_ledger(config, target, observed, hardware)
    kv, kv_refusals = kv_rows(config, target, vram)
    cluster, cluster_refusals = cluster_ledger(config, target, observed)
    refusals += vram_refusals + ram_refusals + kv_refusals + cluster_refusals
    if vram is not None and not vram_refusals:
        steps, transition_refusal = _order_within_the_card(config, target, observed, vram)
        if transition_refusal is not None:
            refusals.append(transition_refusal)
    else:
        steps = order_steps(config, target, observed, MAKE_BEFORE_BREAK)
    return Plan(
        stack=target,
        steps=steps,
        vram=vram,
        ram=ram,
        feasible=not refusals,
        refusals=tuple(refusals),
        bindings_after=dict(config.stacks[target].roles),
        kv=kv,
        cluster=cluster,
    )


def _order_within_the_card(
    config: StacksConfig, target: str, observed: ObservedState, vram: VramLedger
) -> tuple[tuple[Step, ...], Refusal | None]:
    """The most lenient order whose every start fits the card; else the strictest one and why not."""
    limit = vram.total_mib - vram.reserve_mib
    *lenient, strictest = ORDERINGS
    for ordering in lenient:
        steps = order_steps(config, target, observed, ordering)
        if first_overflow(steps, config, observed, limit) is None:
            return steps, None
    steps = order_steps(config, target, observed, strictest)
    overflow = first_overflow(steps, config, observed, limit)
    if overflow is None:
        return steps, None
    return steps, _transition_refusal(config, target, observed, steps, overflow, vram)


def _orchestrator_refusals(config: StacksConfig, stack: str) -> list[Refusal]:
    model = config.stacks[stack].roles.get(ORCHESTRATOR)
    if model is None:
        return [
            Refusal(
                "orchestrator",
                f"{stack} does not bind the {ORCHESTRATOR} role, which must have a backend at every moment; "
                f"add '{ORCHESTRATOR}: MODEL' under stacks.{stack}.roles",
            )
        ]
    if is_on_demand(config.models[model]):
        return [
            Refusal(
                "orchestrator",
                f"{stack} binds the {ORCHESTRATOR} to {model}, an on_demand model that is stopped when idle, but "
                f"the {ORCHESTRATOR} never sleeps; set models.{model}.lifecycle: always_on",
                model,
            )
        ]
    return []


def _transition_refusal(
    config: StacksConfig,
    stack: str,
    observed: ObservedState,
    steps: tuple[Step, ...],
    overflow: int,
    vram: VramLedger,
) -> Refusal:
    """Why even the strictest order overfills the card: which start, and what still holds memory."""
    starting = getattr(steps[overflow], "model", "?")
    residents = gpu_residents_after_each_step(steps, config, observed)[overflow]
    holders = sorted(residents - {starting}, key=lambda n: -config.models[n].memory_mib)
    held = ", ".join(f"{n} {gib(config.models[n].memory_mib)}" for n in holders) or "nothing of stackd's"
    old = observed.bindings.get(ORCHESTRATOR)
    new = config.stacks[stack].roles.get(ORCHESTRATOR)
    if old in holders and old != new:
        why = (
            f"the {ORCHESTRATOR} cannot move from {old} to {new} without a gap, so {old} must run "
            f"until {new} is up"
        )
    else:
        why = "the GPU members that stay leave no room for it"
    verb = "is" if len(holders) == 1 else "are"
    return Refusal(
        "vram",
        f"switching to {stack} would overfill GPU {vram.device} ({vram.gpu_name}) at step {overflow + 1}: "
        f"starting {starting} ({gib(config.models[starting].memory_mib)}) while {held} {verb} still up needs "
        f"{gib(vram_in_use(residents, config))} + {gib(vram.reserve_mib)} reserve, and the card has "
        f"{gib(vram.total_mib)}; {why}. Free VRAM (stop other GPU work) or switch through a stack without "
        "GPU members first",
        starting,
    )
