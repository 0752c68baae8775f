"""The body of ``GET /status``: built from one observation, so every part of it agrees.

A member's ``state`` is one word a person scans for (running, stopped, loaded, pulled, missing,
ready, degraded, unhealthy, unknown) and ``detail`` says why when it is not the healthy one.
Drift (a member that should run and does not, or something running that the active stack
does not have) is listed under ``drift``: never a half state silently.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from stackd.config.models import Lifecycle, Model, Runtime
from stackd.hardware.types import HardwareSnapshot
from stackd.manager.observe import Observation, drift, extra_members
from stackd.planner.footprints import measured_of
from stackd.planner.plan import Plan
from stackd.planner.views import plan_json

if TYPE_CHECKING:
    from stackd.manager.model_stack_manager import ModelStackManager


def build_status(
    manager: ModelStackManager, observation: Observation, hardware: HardwareSnapshot, ledger_plan: Plan | None
) -> dict[str, Any]:
    config, active = manager.config, manager.active_stack
    roles = manager.live_roles.current
    members, differences = [], [f"{engine}: {why}" for engine, why in observation.problems.items()]
    if active in config.stacks:
        assert active is not None
        members = [
            member_json(manager, name, config.models[name], observation, in_stack=True)
            for name in config.stacks[active].member_names
        ]
        members += [
            member_json(manager, name, config.models[name], observation, in_stack=False)
            for name in extra_members(config, active, observation)
        ]
        involved = manager.recovery.involved if manager.recovery else ()
        differences = drift(config, active, observation, involved)
    ledger = plan_json(ledger_plan) if ledger_plan is not None else {}
    current = manager.current_switch
    return {
        "active_stack": active,
        "members": members,
        "roles": dict(sorted(roles.bindings.items())),
        "roles_version": roles.version,
        "roles_stack": roles.stack,
        "degraded": [{"model": m, "error": e} for m, e in sorted(manager.degraded.items())],
        "drift": differences,
        "engines": {engine: observation.problems.get(engine, "ok") for engine in ("docker", "ollama")},
        "cluster": asdict(observation.state.cluster) if observation.state.cluster is not None else None,
        "switch_in_progress": {"switch_id": current.id, "stack": current.target, "state": current.state}
        if current
        else None,
        "last_switch": manager.last_switch_summary(),
        "recovery": manager.recovery.message if manager.recovery else None,
        "recovery_detail": manager.recovery.to_dict() if manager.recovery else None,
        "periodic": {
            name: {"ok": r.ok, "at": r.at, "summary": r.summary} for name, r in manager.jobs.items()
        },
        "gpu": {
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
                }
                for g in hardware.gpus
            ],
            "vram": ledger.get("vram"),
            "kv": ledger.get("kv") or [],  # the KV-cache table of the active stack (planner.kv)
        },
        "ram": ledger.get("ram"),
    }


def member_json(
    manager: ModelStackManager, name: str, model: Model, observation: Observation, in_stack: bool
) -> dict[str, Any]:
    state, detail = member_state(manager, name, model, observation)
    probe = manager.probes.get(name)
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
                "log_path": info.log_path,
            }
            if state in ("dead", "restarting", "unhealthy"):
                out["log_tail"] = manager.processes.log_tail(name, 10)
    return out


def member_state(
    manager: ModelStackManager, name: str, model: Model, observation: Observation
) -> tuple[str, str | None]:
    observed, probe = observation.state, manager.probes.get(name)
    on_demand = model.lifecycle == Lifecycle.on_demand
    match model.runtime:
        case Runtime.docker:
            if "docker" in observation.problems:
                return "unknown", observation.problems["docker"]
            if name not in observed.running_containers:
                return "stopped", "on demand: a lease starts it" if on_demand else "should be running"
            if name in manager.degraded:  # a swarm member whose node is down or task does not run
                return "degraded", manager.degraded[name]
            if probe is not None and not probe.ok:
                return "unhealthy", probe.error
            return "running", None
        case Runtime.process:
            info = observation.process(name)
            if name not in observed.running_processes:
                if info is not None and info.state in ("exited", "failed", "restarting"):
                    return ("restarting" if info.state == "restarting" else "dead"), info.last_exit
                return "stopped", "on demand: a lease starts it" if on_demand else "should be running"
            if probe is not None and not probe.ok:
                return "unhealthy", probe.error
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
            if name in manager.degraded:
                return "degraded", manager.degraded[name]
            if probe is None:
                return "unprobed", None
            return ("ready", None) if probe.ok else ("degraded", probe.error)
