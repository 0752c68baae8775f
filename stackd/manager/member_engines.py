"""What the manager does to one member's engine outside a switch: the idle release of an
on-demand member and a restart on request. The checks that refuse them (a switch in progress, a
name not in the active stack, a member with no engine of stackd's) and the driver calls; the
manager runs the calls on its worker (``ModelStackManager.release`` / ``restart``)."""

from __future__ import annotations

from stackd.config.models import Lifecycle, Model, Runtime, StacksConfig
from stackd.errors import Conflict, NotFound
from stackd.manager.seams import Drivers
from stackd.manager.switch import Switch
from stackd.planner.plan import ObservedState


def refuse_release(model: str, current: Switch | None) -> None:
    """``Conflict`` while a switch is in progress: the member is released later."""
    if current is not None:
        raise Conflict(
            f"switch {current.id} is in progress; {model} is released later",
            switch_id=current.id,
            stack=current.target,
        )


async def stop_engine(drivers: Drivers, model: str, spec: Model) -> None:
    """Stop (or unload) the member's engine, whatever runs it."""
    if spec.runtime == Runtime.docker:
        await drivers.containers.ensure_stopped(model, spec)
    elif spec.runtime == Runtime.process:
        await drivers.processes.ensure_stopped(model, spec)
    elif spec.ollama is not None:
        await drivers.ollama.unload(spec.ollama)


def refuse_restart(config: StacksConfig, active: str | None, model: str, current: Switch | None) -> None:
    """``NotFound`` for a name the active stack lacks; ``Conflict`` during a switch or for a member
    with no engine of stackd's (Ollama, remote)."""
    stack = config.stacks.get(active or "")
    if stack is None or model not in stack.member_names:
        raise NotFound(f"{model} is not a member of the active stack ({active or 'none'})")
    if current is not None:
        raise Conflict(f"switch {current.id} is in progress; restart {model} after it")
    spec = config.models[model]
    if spec.runtime not in (Runtime.docker, Runtime.process):
        raise Conflict(f"{model} runs on {spec.runtime.value}: stackd has no engine of its own to restart")


async def restart_engine(drivers: Drivers, model: str, spec: Model, observed: ObservedState) -> None:
    """Stop and start the member's engine again; ``Conflict`` for one on demand and stopped (a
    lease starts it)."""
    running = observed.running_containers | observed.running_processes
    if model not in running and spec.lifecycle == Lifecycle.on_demand:
        raise Conflict(f"{model} is on demand and stopped: a lease starts it")
    engine = drivers.containers if spec.runtime == Runtime.docker else drivers.processes
    await engine.ensure_stopped(model, spec)
    await engine.ensure_running(model, spec)
