"""Facts about members that every part of the planner asks: where a model runs, whether it is up.

"Up" follows the drivers' observation: a docker member whose container runs, an Ollama member
whose tag is loaded, and every remote member (reachability is probed, not held).
"""

from __future__ import annotations

from stackd.config.models import Lifecycle, Model, Placement, Runtime, StacksConfig
from stackd.planner.plan import (
    LoadModel,
    ObservedState,
    StartContainer,
    StartProcess,
    StartStep,
    StopContainer,
    StopProcess,
    StopStep,
    UnloadModel,
)
from stackd.planner.units import MIB_PER_GIB as MIB_PER_GIB  # re-exported: the planner's callers read it here
from stackd.planner.units import gib as gib

ORCHESTRATOR = "orchestrator"


def is_clustered(model: Model) -> bool:
    """A Swarm service: it runs on a node of the cluster, budgeted per node (planner/cluster.py),
    never on this host's card or RAM."""
    return model.docker is not None and model.docker.swarm is not None


def holds_node_gpu(model: Model) -> bool:
    """A Swarm service that reserves GPUs of its node (docker.swarm.gpus, default 1 on the GPU)."""
    swarm = model.docker.swarm if model.docker is not None else None
    if swarm is None:
        return False
    return swarm.gpus > 0 if swarm.gpus is not None else model.placement == Placement.gpu


def is_gpu(model: Model) -> bool:
    """On this host's GPU."""
    return model.placement == Placement.gpu and not is_clustered(model)


def is_cpu(model: Model) -> bool:
    """In this host's RAM."""
    return model.placement == Placement.cpu and not is_clustered(model)


def is_on_demand(model: Model) -> bool:
    return model.lifecycle == Lifecycle.on_demand


def is_up(name: str, model: Model, observed: ObservedState) -> bool:
    match model.runtime:
        case Runtime.docker:
            return name in observed.running_containers
        case Runtime.process:
            return name in observed.running_processes
        case Runtime.ollama:
            return model.ollama is not None and model.ollama.tag in observed.loaded_tags
        case Runtime.remote:
            return True


def up_models(config: StacksConfig, observed: ObservedState) -> list[str]:
    """Config models that are up now, in config order."""
    return [name for name, model in config.models.items() if is_up(name, model, observed)]


def start_step(name: str, model: Model) -> StartStep | None:
    """The step that brings an always-on local member up (None for a remote one)."""
    if model.docker is not None:
        return StartContainer(name, model.docker.container)
    if model.process is not None:
        return StartProcess(name)
    if model.ollama is not None:
        return LoadModel(name, model.ollama.tag)
    return None


def stop_step(name: str, model: Model) -> StopStep | None:
    if model.docker is not None:
        return StopContainer(name, model.docker.container)
    if model.process is not None:
        return StopProcess(name)
    if model.ollama is not None:
        return UnloadModel(name, model.ollama.tag)
    return None


def startable_on_demand(model: Model, pulled_tags: set[str] | frozenset[str]) -> bool:
    """An on-demand member a lease can start: a docker or process one always, an Ollama one once
    pulled."""
    if not is_on_demand(model):
        return False
    if model.ollama is not None:
        return model.ollama.tag in pulled_tags
    return True
