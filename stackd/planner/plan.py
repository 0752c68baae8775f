"""Values the planner computes and the manager applies: steps, ledgers, observed state, plans.

Steps are verbs (``StartContainer``), frozen, and carry a ``kind`` tag so that they serialise to
JSON unambiguously. The manager runs them with one exhaustive ``match``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from stackd.planner.cluster_state import ClusterLedger, ClusterObservation
from stackd.planner.kv_row import KvRow


@dataclass(frozen=True)
class StartContainer:
    """Start (create first, when the config gives a spec) a docker member and wait until ready."""

    model: str
    container: str
    kind: Literal["start_container"] = "start_container"


@dataclass(frozen=True)
class StopContainer:
    model: str
    container: str
    kind: Literal["stop_container"] = "stop_container"


@dataclass(frozen=True)
class StartProcess:
    """Spawn a process member's engine (its own process group) and wait until it answers."""

    model: str
    kind: Literal["start_process"] = "start_process"


@dataclass(frozen=True)
class StopProcess:
    """SIGTERM the member's process group, SIGKILL after its grace; nothing of the group survives."""

    model: str
    kind: Literal["stop_process"] = "stop_process"


@dataclass(frozen=True)
class PullModel:
    """Pull an Ollama tag that is not present locally (streams progress)."""

    model: str
    tag: str
    kind: Literal["pull_model"] = "pull_model"


@dataclass(frozen=True)
class LoadModel:
    """Load an always-on Ollama member with its configured options and keep-alive."""

    model: str
    tag: str
    kind: Literal["load_model"] = "load_model"


@dataclass(frozen=True)
class UnloadModel:
    model: str
    tag: str
    kind: Literal["unload_model"] = "unload_model"


@dataclass(frozen=True)
class ProbeRemote:
    """Check that a remote member answers (no tokens spent). Failure degrades unless required."""

    model: str
    required: bool = False
    kind: Literal["probe_remote"] = "probe_remote"


@dataclass(frozen=True)
class BindRole:
    """Point a role at a model that is already up (make-before-break)."""

    role: str
    model: str
    kind: Literal["bind_role"] = "bind_role"


@dataclass(frozen=True)
class UnbindRole:
    """Remove a role the target stack does not serve. Never emitted for a required role."""

    role: str
    kind: Literal["unbind_role"] = "unbind_role"


Step = (
    StartContainer
    | StopContainer
    | StartProcess
    | StopProcess
    | PullModel
    | LoadModel
    | UnloadModel
    | ProbeRemote
    | BindRole
    | UnbindRole
)
StartStep = StartContainer | StartProcess | LoadModel
StopStep = StopContainer | StopProcess | UnloadModel


def describe_step(step: Mapping[str, object], *, spaced: bool = False) -> str:
    """A step's JSON as a short phrase: ``start_container orchestrator-8b (aether-orchestrator)``,
    ``bind_role vision -> vision-7b``, ``role table swap`` (the executor's undo record of the role
    table). ``spaced`` writes the kind in words (``start container``), as the CLI prints it."""
    kind = str(step.get("kind", "step"))
    name = kind.replace("_", " ") if spaced else kind
    model = step.get("model")
    if kind in ("bind_role", "unbind_role"):
        return f"{name} {step.get('role')}" + (f" -> {model}" if model else "")
    if kind == "roles_swapped":
        return "role table swap"
    target = step.get("tag") or step.get("container")
    return f"{name} {model or ''}" + (f" ({target})" if target and target != model else "")


@dataclass(frozen=True)
class ObservedState:
    """What is really running, as the drivers report it (or as the journal last recorded it).

    Model names are config keys. ``running_containers`` are docker members whose container runs,
    ``running_processes`` process members whose engine process lives; ``pulled_tags`` /
    ``loaded_tags`` are Ollama tags; ``bindings`` is the live role table. ``measured_mib`` is what
    members that run were measured to hold (RSS of the process tree for CPU members, NVML per
    process for GPU members), beside the configured ``memory_gb``. ``footprint_mib`` is the
    largest each member was ever measured to hold under its current config (the state store's
    footprints): the planner budgets a GPU member at the largest of the three.
    """

    active_stack: str | None = None
    running_containers: frozenset[str] = frozenset()
    running_processes: frozenset[str] = frozenset()
    pulled_tags: frozenset[str] = frozenset()
    loaded_tags: frozenset[str] = frozenset()
    bindings: Mapping[str, str] = field(default_factory=dict)
    measured_mib: Mapping[str, int] = field(default_factory=dict)
    footprint_mib: Mapping[str, int] = field(default_factory=dict)
    cluster: ClusterObservation | None = None  # Swarm's nodes and placements (a config with cluster:)


@dataclass(frozen=True)
class LedgerItem:
    """One line of a ledger: ``mib`` as configured, ``measured_mib`` as measured (now, or the
    largest remembered for its config); the ledger's sums use ``budget_mib``, the larger."""

    model: str
    mib: int
    kind: Literal["always_on", "on_demand", "foreign", "reserve"]
    measured_mib: int | None = None

    @property
    def budget_mib(self) -> int:
        return max(self.mib, self.measured_mib or 0)

    @property
    def over_declared(self) -> bool:
        """Measured more than 10% above the declaration (``stackd status`` flags it)."""
        return self.measured_mib is not None and self.measured_mib > 1.1 * self.mib


@dataclass(frozen=True)
class VramLedger:
    """The GPU budget of the target stack. All figures in MiB.

    ``committed = reserve + always_on + swap_budget``; ``headroom = total - committed``.
    ``reserve`` is the larger of the configured reserve and what foreign processes use now.
    ``swap_budget`` is the sum over swap groups of each group's largest member.
    """

    device: int
    gpu_name: str
    total_mib: int
    reserve_mib: int
    always_on_mib: int
    swap_budget_mib: int
    largest_swap_group: str | None
    headroom_mib: int
    items: tuple[LedgerItem, ...] = ()
    simulated: bool = False


@dataclass(frozen=True)
class RamLedger:
    """Host RAM for CPU members (Ollama loads CPU models without mmap: RSS = full weights)."""

    total_mib: int
    available_mib: int
    always_on_mib: int
    on_demand_max_mib: int
    headroom_mib: int
    items: tuple[LedgerItem, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Why a plan is not feasible, written for a person: what, how much, and what holds it."""

    code: Literal["vram", "ram", "orchestrator", "unknown_stack", "no_gpu", "kv", "cluster"]
    message: str
    model: str | None = None


@dataclass(frozen=True)
class Plan:
    stack: str
    steps: tuple[Step, ...]
    vram: VramLedger | None
    ram: RamLedger
    feasible: bool
    refusals: tuple[Refusal, ...] = ()
    bindings_after: Mapping[str, str] = field(default_factory=dict)
    degraded: tuple[str, ...] = ()
    kv: tuple[KvRow, ...] = ()  # the KV-cache table (stackd.planner.kv), one row per architecture
    cluster: ClusterLedger | None = None  # each Swarm node's GPUs and the members on them
