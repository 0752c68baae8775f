"""The body of ``GET /status``: built from one observation and one ``StatusSnapshot`` of the
manager (a frozen value taken at once), so every part of it agrees.

A member's ``state`` is one word a person scans for (running, stopped, loaded, pulled, missing,
ready, degraded, unhealthy, unknown) and ``detail`` says why when it is not the healthy one.
Drift (a member that should run and does not, or something running that the active stack
does not have) is listed under ``drift``: never a half state silently.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from stackd.config.models import Lifecycle, Model, Runtime, StacksConfig
from stackd.hardware.types import HardwareSnapshot
from stackd.manager.observe import Observation, drift, extra_members
from stackd.manager.probes import JobResult, MemberHealth, ProbeResult, Verdict
from stackd.manager.recovery import RecoveryReport
from stackd.manager.seams import Planner
from stackd.manager.worker import SwitchWorker
from stackd.planner.footprints import measured_of
from stackd.planner.plan import Plan
from stackd.planner.views import plan_json
from stackd.roles import RoleTable

log = logging.getLogger("stackd.manager")  # the manager's: a failed ledger is the manager's to tell


@dataclass(frozen=True)
class StatusSnapshot:
    """What the manager knows, copied at one instant: the status view reads only this.

    ``log_tails``: the last lines of the engine processes whose state calls for them (see
    ``log_tail_wanted``), read by the manager after the snapshot was taken."""

    config: StacksConfig
    active: str | None
    roles: RoleTable
    probes: Mapping[str, ProbeResult]
    degraded: Mapping[str, str]
    verdicts: Mapping[str, Verdict]  # every member's health, as ``MemberHealth.verdict`` decides it
    jobs: Mapping[str, JobResult]
    switch_in_progress: Mapping[str, Any] | None
    last_switch: Mapping[str, Any] | None
    recovery: RecoveryReport | None
    log_tails: Mapping[str, list[str]] = field(default_factory=dict)


def snapshot_of(
    config: StacksConfig,
    active: str | None,
    roles: RoleTable,
    members: MemberHealth,
    worker: SwitchWorker,
    recovery: RecoveryReport | None,
) -> StatusSnapshot:
    """A snapshot of the manager's parts, copied now."""
    current = worker.current
    return StatusSnapshot(
        config=config,
        active=active,
        roles=roles,
        probes=dict(members.probes),
        degraded=dict(members.degraded),
        verdicts={name: members.verdict(config, name) for name in config.models},
        jobs=dict(members.jobs),
        switch_in_progress={"switch_id": current.id, "stack": current.target, "state": current.state}
        if current
        else None,
        last_switch=worker.last_summary(),
        recovery=recovery,
    )


def shown_members(snapshot: StatusSnapshot, observation: Observation) -> list[tuple[str, bool]]:
    """(name, in the active stack) for each member status lists: the stack's, then extras running."""
    config, active = snapshot.config, snapshot.active
    if active not in config.stacks:
        return []
    assert active is not None
    return [(name, True) for name in config.stacks[active].member_names] + [
        (name, False) for name in extra_members(config, active, observation)
    ]


def log_tail_wanted(snapshot: StatusSnapshot, observation: Observation) -> list[str]:
    """The engine processes shown whose state is dead, restarting or unhealthy."""
    models = snapshot.config.models
    return [
        name
        for name, _ in shown_members(snapshot, observation)
        if models[name].runtime == Runtime.process
        and observation.process(name) is not None
        and member_state(snapshot, name, models[name], observation)[0] in ("dead", "restarting", "unhealthy")
    ]


def active_ledger(
    planner: Planner, snapshot: StatusSnapshot, observation: Observation, hardware: HardwareSnapshot
) -> Plan | None:
    """The active stack planned as it stands, for its ledgers; None without an active stack, or
    when the planner fails: a ledger is a nicety, status must answer even if the planner cannot."""
    if snapshot.active is None or snapshot.active not in snapshot.config.stacks:
        return None
    try:
        return planner(snapshot.config, observation.state, snapshot.active, hardware)
    except Exception:
        log.exception("planning the active stack's ledger failed")
        return None


def build_status(
    snapshot: StatusSnapshot, observation: Observation, hardware: HardwareSnapshot, ledger_plan: Plan | None
) -> dict[str, Any]:
    config, active, roles = snapshot.config, snapshot.active, snapshot.roles
    members, differences = [], [f"{engine}: {why}" for engine, why in observation.problems.items()]
    if active in config.stacks:
        assert active is not None
        members = [
            member_json(snapshot, name, config.models[name], observation, in_stack=in_stack)
            for name, in_stack in shown_members(snapshot, observation)
        ]
        involved = snapshot.recovery.involved if snapshot.recovery else ()
        differences = drift(config, active, observation, involved)
        if snapshot.switch_in_progress:
            # Mid-switch, what runs is between two stacks by design (the new members start
            # before the old ones stop): the switch reports those steps; drift here would be a
            # false alarm. What the engines cannot tell is still said.
            differences = [d for d in differences if d.split(":", 1)[0] in observation.problems]
    ledger = plan_json(ledger_plan) if ledger_plan is not None else {}
    recovery = snapshot.recovery
    return {
        "active_stack": active,
        "members": members,
        "roles": dict(sorted(roles.bindings.items())),
        "roles_version": roles.version,
        "roles_stack": roles.stack,
        "degraded": [{"model": m, "error": e} for m, e in sorted(snapshot.degraded.items())],
        "drift": differences,
        "engines": {engine: observation.problems.get(engine, "ok") for engine in ("docker", "ollama")},
        "cluster": asdict(observation.state.cluster) if observation.state.cluster is not None else None,
        "switch_in_progress": dict(snapshot.switch_in_progress) if snapshot.switch_in_progress else None,
        "last_switch": dict(snapshot.last_switch) if snapshot.last_switch is not None else None,
        "recovery": recovery.message if recovery else None,
        "recovery_detail": recovery.to_dict() if recovery else None,
        "periodic": {
            name: {"ok": r.ok, "at": r.at, "summary": r.summary} for name, r in snapshot.jobs.items()
        },
        "gpu": gpu_json(hardware, ledger),
        "ram": ledger.get("ram"),
    }


def gpu_json(hardware: HardwareSnapshot, ledger: Mapping[str, object]) -> dict[str, object]:
    """Status's ``gpu``: what NVML (or the simulator) reads, and the active stack's VRAM and KV ledgers."""
    return {
        "state": hardware.gpu_state,
        "source": hardware.gpu_source,
        "simulated": hardware.simulated,
        "devices": [
            {
                "index": g.index,
                "name": g.name,
                "total_mib": g.total_mib,
                "used_mib": g.used_mib,
                "free_mib": g.free_mib,
                "power_w": g.power_w,
                "power_limit_w": g.power_limit_w,
                "util_pct": g.util_pct,
            }
            for g in hardware.gpus
        ],
        "vram": ledger.get("vram"),
        "kv": ledger.get("kv") or [],  # the KV-cache table of the active stack (planner.kv)
    }


def member_json(
    snapshot: StatusSnapshot, name: str, model: Model, observation: Observation, in_stack: bool
) -> dict[str, Any]:
    state, detail = member_state(snapshot, name, model, observation)
    probe = snapshot.probes.get(name)
    out: dict[str, Any] = {
        "name": name,
        "runtime": model.runtime.value,
        "placement": model.placement.value,
        "memory_mib": model.memory_mib,
        "measured_mib": measured_of(name, observation.state),  # now, or the largest remembered
        "lifecycle": model.lifecycle.value,
        "in_stack": in_stack,
        "state": state,
        "detail": detail,
        "last_probe": {"ok": probe.ok, "at": probe.at, "error": probe.error} if probe else None,
    }
    if model.runtime == Runtime.process:
        info = observation.process(name)
        if info is not None:
            out["process"] = {
                "pid": info.pid,
                "port": info.port,
                "endpoint": info.endpoint,
                "state": info.state,
                "restarts": info.restarts,
                "exits": info.exits,
                "last_exit": info.last_exit,
                "ready_at": info.ready_at,
                "log_path": info.log_path,
            }
            if state in ("dead", "restarting", "unhealthy"):
                out["log_tail"] = list(snapshot.log_tails.get(name, []))
    return out


def member_state(
    snapshot: StatusSnapshot, name: str, model: Model, observation: Observation
) -> tuple[str, str | None]:
    """The member's state from what runs (the observation) and its health verdict (never decided
    here: ``MemberHealth.verdict``, which the router and ``/roles`` read too)."""
    observed, verdict = observation.state, snapshot.verdicts.get(name, Verdict("unprobed"))
    on_demand = model.lifecycle == Lifecycle.on_demand
    troubled = verdict.health in ("degraded", "unhealthy")
    match model.runtime:
        case Runtime.docker:
            if "docker" in observation.problems:
                return "unknown", observation.problems["docker"]
            if name not in observed.running_containers:
                return "stopped", "on demand: a lease starts it" if on_demand else "should be running"
            if troubled:  # degraded: a swarm member whose node is down or task does not run
                return verdict.health, verdict.why
            return "running", None
        case Runtime.process:
            info = observation.process(name)
            if name not in observed.running_processes:
                if info is not None and info.state in ("exited", "failed", "restarting"):
                    return ("restarting" if info.state == "restarting" else "dead"), info.last_exit
                return "stopped", "on demand: a lease starts it" if on_demand else "should be running"
            if troubled:
                return "unhealthy", verdict.why
            return "running", None
        case Runtime.ollama:
            if "ollama" in observation.problems:
                return "unknown", observation.problems["ollama"]
            assert model.ollama is not None
            if model.ollama.tag in observed.loaded_tags:
                return "loaded", None
            if model.ollama.tag in observed.pulled_tags:
                return "pulled", "on demand: loaded on first use" if on_demand else "should be loaded"
            return "missing", f"Ollama tag {model.ollama.tag} is not pulled"
        case Runtime.remote:
            if verdict.health == "unprobed":
                return "unprobed", None
            return ("ready", None) if verdict.health == "ok" else ("degraded", verdict.why)
