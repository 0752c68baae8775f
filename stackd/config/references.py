"""Cross-references of a config: names a stack, role, strategy or preset uses must exist, each
container belongs to one model, always-on GPU models fit the card when its size is set, and no
member claims more memory than a machine has.

The checks read plain data (the file after ``${VAR}`` expansion, or a ``StacksConfig``'s dump),
not validated models, so that a file with schema errors has its references checked in the same
pass. Each check reads only values of the shape it needs and skips the rest, which the schema
reports. A section that is missing or misshapen turns its checks off instead of calling every
name unknown: with ``modles:`` for ``models:``, the typo is the one problem, not each role.

Each problem is (field path, message with a fix); the loader maps the path to FILE:LINE.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, NonNegativeFloat, TypeAdapter, ValidationError

from stackd.config.cluster import cluster_problems
from stackd.config.fields import MIB_PER_GIB
from stackd.config.models import GpuBudget, Lifecycle, Model, Placement, RoleSpec, Stack, StacksConfig
from stackd.config.reason import ReasonConfig

if TYPE_CHECKING:
    from stackd.config.yaml_source import FieldPath

Problem = tuple[tuple[str | int, ...], str]

# The largest single GPUs have 288 GB (268 GiB): above this, memory_gb was surely meant in MiB.
GPU_BOUND_GIB = 320.0
CPU_BOUND_GIB = 4096.0

_PLACEMENT = TypeAdapter(Placement)
_LIFECYCLE = TypeAdapter(Lifecycle)
_GIB = TypeAdapter(NonNegativeFloat)
_DEFAULT_LIFECYCLE = Model.model_fields["lifecycle"].default
M = TypeVar("M", bound=BaseModel)

Section = dict[object, object]
"""A mapping of the plain config data: its keys and values are checked where they are read."""


def reference_problems(config: StacksConfig) -> list[Problem]:
    """Every dangling or inconsistent reference of a validated config."""
    return check_references(config.model_dump())


def check_references(data: object, hidden: Collection[FieldPath] = frozenset()) -> list[Problem]:
    """Every dangling or inconsistent reference of config data, valid or not.

    A value at a ``hidden`` path came from the environment and is not quoted.
    """
    check = _Check(hidden)
    if not isinstance(data, dict):
        return []
    stacks = _section(data, "stacks", StacksConfig, required=True)
    models = _section(data, "models", StacksConfig, required=True)
    roles = _section(data, "roles", StacksConfig, required=True)
    reason = _section(data, "reason", StacksConfig)
    strategies = _section(reason, "strategies", ReasonConfig)
    stack_names = stacks or None  # no stack at all is the schema's problem, not default_stack's
    check.known(data.get("default_stack"), ("default_stack",), "stack", stack_names)
    for i, name in _items(data.get("fallback_stacks")):
        check.known(name, ("fallback_stacks", i), "stack", stack_names)
    _check_fallbacks(check, data.get("default_stack"), data.get("fallback_stacks"))
    for sname, stack in _mappings(stacks):
        _check_stack(check, sname, stack, models, roles, strategies, stacks)
    _check_idle_chains(check, stacks)
    for sname, strategy in _mappings(strategies):
        check.known(strategy.get("role"), ("reason", "strategies", sname, "role"), "role", roles)
        for i, model in _items(strategy.get("models")):
            check.known(model, ("reason", "strategies", sname, "models", i), "model", models)
    for i, strat in _items((reason or {}).get("default_chain")):
        check.known(strat, ("reason", "default_chain", i), "strategy", strategies)
    for i, rule in _items((reason or {}).get("effort")):
        for j, strat in _items(rule.get("chain") if isinstance(rule, dict) else None):
            check.known(strat, ("reason", "effort", i, "chain", j), "strategy", strategies)
    for pname, preset in _mappings(_section(data, "presets", StacksConfig)):
        check.known(preset.get("role"), ("presets", pname, "role"), "role", roles)
        check.known(preset.get("model"), ("presets", pname, "model"), "model", models)
        for slice_name, model in _entries(preset.get("slices")):
            check.known(model, ("presets", pname, "slices", slice_name), "model", models)
    for i, window in _items((_section(data, "schedules", StacksConfig) or {}).get("windows")):
        if isinstance(window, dict):
            check.known(window.get("stack"), ("schedules", "windows", i, "stack"), "stack", stack_names)
    _check_containers(check, models)
    check.out.extend(cluster_problems(data))
    gpu = _valid(GpuBudget, _section(data, "gpu", StacksConfig))
    _check_memory(check, models, gpu)
    if gpu is not None:
        check.out.extend(_vram_problems(stacks, models, gpu))
    return check.out


class _Check:
    """Collects problems; quotes a value unless it came from the environment."""

    def __init__(self, hidden: Collection[FieldPath]) -> None:
        self.out: list[Problem] = []
        self.hidden = hidden

    def quote(self, value: object, path: FieldPath, is_key: bool = False) -> str:
        """A key is never expanded: only the value at a path may come from the environment."""
        return "(a value from the environment)" if path in self.hidden and not is_key else f"'{value}'"

    def known(
        self, value: object, path: FieldPath, what: str, names: Section | None, is_key: bool = False
    ) -> None:
        """A name that must be a key of ``names`` (None: the names are unknown, skip)."""
        if not isinstance(value, str) or names is None or value in names:
            return
        hint = "declare it under roles: or " if is_key else ""
        quoted = self.quote(value, path, is_key)
        self.out.append((path, f"unknown {what} {quoted}; {hint}use one of {sorted(str(n) for n in names)}"))


def _check_fallbacks(check: _Check, default: object, fallbacks: object) -> None:
    """Each fallback once, and never the default: a fallback is tried because the stacks before
    it could not run, so the default again, or a stack twice, retries what just failed (another
    start timeout) and hides which stack the author meant to list."""
    first_at: dict[str, int] = {}
    for i, name in _items(fallbacks):
        if not isinstance(name, str):
            continue
        path = ("fallback_stacks", i)
        if name == default:
            check.out.append(
                (
                    path,
                    f"{check.quote(name, path)} is the default_stack, which is tried first; "
                    "remove it from fallback_stacks",
                )
            )
        elif name in first_at:
            check.out.append(
                (
                    path,
                    f"{check.quote(name, path)} is listed twice (first as fallback_stacks[{first_at[name]}]); "
                    "remove the repeat",
                )
            )
        else:
            first_at[name] = i


def _check_stack(
    check: _Check,
    sname: str,
    stack: Section,
    models: Section | None,
    roles: Section | None,
    strategies: Section | None,
    stacks: Section | None = None,
) -> None:
    at = ("stacks", sname)
    bound = _section(stack, "roles", Stack)
    for role, model in _entries(bound):
        check.known(role, (*at, "roles", role), "role", roles, is_key=True)
        check.known(model, (*at, "roles", role), "model", models)
    members = [(i, m) for i, m in _items(stack.get("members")) if isinstance(m, str)]
    for i, model in members:
        check.known(model, (*at, "members", i), "model", models)
    if len({m for _, m in members}) != len(members):
        check.out.append(((*at, "members"), "a model is listed twice; list each member once"))
    if bound is not None:
        for role, spec in _mappings(roles):
            role_spec = _valid(RoleSpec, spec)
            if role_spec is not None and role_spec.required and role not in bound:
                check.out.append(
                    ((*at, "roles"), f"required role '{role}' is not bound; add '{role}: MODEL'")
                )
    for i, strat in _items(stack.get("reason_chain")):
        check.known(strat, (*at, "reason_chain", i), "strategy", strategies)
    idle = stack.get("idle")
    if isinstance(idle, dict):
        check.known(idle.get("to"), (*at, "idle", "to"), "stack", stacks)
        if idle.get("to") == sname:
            check.out.append(((*at, "idle", "to"), "a stack cannot idle down to itself; name a lower stack"))
        for role, _ in _entries(idle.get("wake_wait_role_s")):
            check.known(role, (*at, "idle", "wake_wait_role_s", role), "role", roles, is_key=True)


def _check_idle_chains(check: _Check, stacks: Section | None) -> None:
    """``idle.to`` chains end: a stack idles down to a lower one, whose own ``idle:`` is followed
    in turn (stackd.schedule.policy), so a chain that comes back to a stack on it would switch
    round it for ever. Reported once per cycle, at the ``idle.to`` that closes it (a stack that
    idles to itself is ``_check_stack``'s)."""
    to: dict[str, str] = {}
    for sname, stack in _mappings(stacks):
        idle = stack.get("idle")
        target = idle.get("to") if isinstance(idle, dict) else None
        if isinstance(target, str) and target != sname and target in (stacks or {}):
            to[sname] = target
    reported: set[str] = set()
    for start in to:
        chain = [start]
        while chain[-1] in to and to[chain[-1]] not in chain:
            chain.append(to[chain[-1]])
        if chain[-1] not in to:
            continue  # the chain ends at a stack without idle:
        cycle = chain[chain.index(to[chain[-1]]) :]
        if reported & set(cycle):
            continue
        reported.update(cycle)
        closing = cycle[-1]
        loop = " -> ".join([*cycle, cycle[0]])
        check.out.append(
            (
                ("stacks", closing, "idle", "to"),
                f"idle.to chain {loop} never ends (each idle: is followed in turn); "
                f"remove idle: from one of them, or point '{closing}' at a stack outside the cycle",
            )
        )


def _check_containers(check: _Check, models: Section | None) -> None:
    owners: dict[str, str] = {}
    for mname, model in _mappings(models):
        docker = model.get("docker")
        container = docker.get("container") if isinstance(docker, dict) else None
        if not isinstance(container, str):
            continue
        other = owners.setdefault(container, mname)
        if other != mname:
            path = ("models", mname, "docker", "container")
            check.out.append(
                (
                    path,
                    f"container {check.quote(container, path)} is already used by model '{other}'; "
                    "give each model its own container",
                )
            )


def _check_memory(check: _Check, models: Section | None, gpu: GpuBudget | None) -> None:
    """A member larger than any machine: memory_gb was written in MiB, or with a slip."""
    gpu_bound = max(GPU_BOUND_GIB, gpu.total_gb or 0) if gpu else GPU_BOUND_GIB
    for mname, model in _mappings(models):
        footprint = _footprint(model)
        if footprint is None:
            continue
        placement, _, gb = footprint
        path = ("models", mname, "memory_gb")
        amount = "that much memory" if path in check.hidden else f"{gb:g} GiB"
        if placement == Placement.gpu and gb > gpu_bound:
            what = f"no single GPU has {amount}"
        elif placement == Placement.cpu and gb > CPU_BOUND_GIB:
            what = f"no machine has {amount} of RAM"
        else:
            continue
        in_gib = "" if path in check.hidden else f": {gb:g} MiB is memory_gb: {gb / MIB_PER_GIB:.2g}"
        check.out.append((path, f"{what}; did you mean MiB? memory_gb is in GiB{in_gib}"))


def _vram_problems(stacks: Section | None, models: Section | None, gpu: GpuBudget) -> list[Problem]:
    """Always-on GPU models of a stack above the card (only when the file sets gpu.total_gb)."""
    if gpu.total_gb is None:
        return []
    total = round(gpu.total_gb * MIB_PER_GIB)
    reserve = round(gpu.reserve_gb * MIB_PER_GIB)
    out: list[Problem] = []
    for sname, stack in _mappings(stacks):
        always: list[tuple[str, int]] = []
        for name in _member_names(stack):
            footprint = _footprint((models or {}).get(name))
            if footprint and footprint[:2] == (Placement.gpu, Lifecycle.always_on):
                always.append((name, round(footprint[2] * MIB_PER_GIB)))
        need = sum(mib for _, mib in always) + reserve
        if need > total:
            listing = ", ".join(f"{m} {mib / MIB_PER_GIB:g} GiB" for m, mib in always)
            out.append(
                (
                    ("stacks", sname),
                    f"always-on GPU models need {need / MIB_PER_GIB:g} GiB ({listing}, reserve "
                    f"{reserve / MIB_PER_GIB:g} GiB) but gpu.total_gb is {gpu.total_gb:g}; "
                    "move a model to on_demand or to the CPU, or lower gpu.reserve_gb",
                )
            )
    return out


def _member_names(stack: Section) -> list[str]:
    """Like ``Stack.member_names``: role models first, each once."""
    roles = stack.get("roles")
    names = [
        *(roles.values() if isinstance(roles, dict) else []),
        *(m for _, m in _items(stack.get("members"))),
    ]
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


def _footprint(model: object) -> tuple[Placement, Lifecycle, float] | None:
    """(placement, lifecycle, GiB) of a model's data, when those three fields are valid.

    None for a model with an unknown key, which may be one of the three misspelt.
    """
    if not isinstance(model, dict) or not set(model) <= set(Model.model_fields):
        return None
    try:
        return (
            _PLACEMENT.validate_python(model.get("placement")),
            _LIFECYCLE.validate_python(model.get("lifecycle") or _DEFAULT_LIFECYCLE),
            _GIB.validate_python(model.get("memory_gb") or 0.0),
        )
    except ValidationError:
        return None


def _section(parent: object, key: str, model: type[BaseModel], required: bool = False) -> Section | None:
    """``parent[key]`` when it is a mapping; ``{}`` for an optional section left out; else None.

    A section left out of a mapping that has unknown keys may be hiding under a typo: None.
    """
    if not isinstance(parent, dict):
        return None
    value = parent.get(key)
    if isinstance(value, dict):
        return value
    if value is None and not required and set(parent) <= set(model.model_fields):
        return {}
    return None


def _mappings(section: object) -> Iterator[tuple[str, Section]]:
    """The named entries of a mapping section whose value is a mapping (a key that is not a name
    cannot be referred to by one; the schema reports it)."""
    for key, value in _entries(section):
        if isinstance(key, str) and isinstance(value, dict):
            yield key, value


def _entries(section: object) -> Iterator[tuple[str | int, object]]:
    """Every entry of a mapping, its key as a field path step (a YAML key is a str or an int)."""
    if isinstance(section, dict):
        yield from ((k, v) for k, v in section.items() if isinstance(k, str | int))


def _items(value: object) -> Iterator[tuple[int, object]]:
    if isinstance(value, list):
        yield from enumerate(value)


def _valid(model: type[M], data: object) -> M | None:
    try:
        return model.model_validate(data) if data is not None else None
    except ValidationError:
        return None
