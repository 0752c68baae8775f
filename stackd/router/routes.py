"""Pure resolution of a call into its route: the ordered targets to try, each with a reason to skip.

No I/O, no clock: (config, role-table snapshot, what the caller asked) -> ``Route``. The router
executes a route; tests check resolution without a network.

- ``reason(effort)``: the first effort rule with ``effort <= up_to`` picks the chain (``chain:
  null`` = the active stack's chain); each strategy expands to its models: a ``role`` to the
  model bound in the snapshot, ``models`` to those that are members of the active stack.
- a preset: ``role`` / ``model`` / an elastic ``slice`` -> one target.
- a gateway model name: ``reason``, ``reason:effort=N``, a preset (``elastic:9b``), or a role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from stackd.config.models import Api, StacksConfig
from stackd.errors import NotFound
from stackd.roles import RoleTable
from stackd.router import skips

MAX_EFFORT = 10
DEFAULT_EFFORT = 5
REASON_MODEL = "reason"
_REASON_NAME = re.compile(r"^reason(?::effort=(\d+))?$")


@dataclass(frozen=True, slots=True)
class Target:
    """One step of a route: try ``model`` for ``strategy``, unless ``skip`` says why not.
    ``allow_empty``: an answer without text is this target's answer, not a failure."""

    strategy: str
    model: str | None
    skip: str | None = None
    queued: bool = False
    allow_empty: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """What to try, in order. ``label`` names the call in the accounting (reason, preset:x, role:y)."""

    label: str
    targets: tuple[Target, ...]


def chain_for_effort(config: StacksConfig, stack: str | None, effort: int) -> list[str]:
    stack_chain = config.chain_for(stack) if stack in config.stacks else list(config.reason.default_chain)
    for rule in config.reason.effort:
        if effort <= rule.up_to:
            return list(rule.chain) if rule.chain is not None else stack_chain
    return stack_chain


def _model_target(config: StacksConfig, table: RoleTable, strategy: str, model: str, queued: bool) -> Target:
    if model not in table.members:
        return Target(strategy, model, skips.not_a_member(model, table.stack), queued)
    if config.models[model].api is Api.http:
        return Target(strategy, model, skips.plain_http(model), queued)
    return Target(strategy, model, None, queued)


def _role_target(config: StacksConfig, table: RoleTable, strategy: str, role: str, queued: bool) -> Target:
    model = table.bindings.get(role)
    if model is None:
        return Target(strategy, None, skips.role_unbound(role, table.stack), queued)
    return _model_target(config, table, strategy, model, queued)


def resolve_chain(config: StacksConfig, table: RoleTable, chain: list[str], label: str = "reason") -> Route:
    """Each strategy of ``chain`` expanded to its targets; a model already tried is skipped."""
    targets: list[Target] = []
    if table.stack is None:
        return Route(label, tuple(Target(s, None, skips.NO_ACTIVE_STACK) for s in chain))
    tried: dict[str, str] = {}
    for name in chain:
        strategy = config.reason.strategies[name]
        if strategy.role:
            expanded = [_role_target(config, table, name, strategy.role, strategy.queued)]
        else:
            expanded = [_model_target(config, table, name, m, strategy.queued) for m in strategy.models]
            usable = [t for t in expanded if t.skip is None]
            if usable:
                expanded = usable  # members only; absent alternatives are not worth an attempt line
            elif len(expanded) > 1:
                expanded = [Target(name, None, skips.none_present(list(strategy.models), table.stack))]
        if strategy.allow_empty:
            expanded = [replace(t, allow_empty=True) for t in expanded]
        for target in expanded:
            if target.skip is None and target.model in tried:
                target = Target(name, target.model, skips.already_tried(tried[target.model]))
            elif target.model is not None and target.skip is None:
                tried[target.model] = name
            targets.append(target)
    return Route(label, tuple(targets))


def reason_route(config: StacksConfig, table: RoleTable, effort: int) -> Route:
    return resolve_chain(config, table, chain_for_effort(config, table.stack, effort))


def deep_reasoning_route(config: StacksConfig, table: RoleTable) -> Route:
    """The chain of the highest effort: maximum quality first."""
    return resolve_chain(config, table, chain_for_effort(config, table.stack, MAX_EFFORT), "deep_reasoning")


def preset_route(
    config: StacksConfig, table: RoleTable, preset_name: str, slice_name: str | None = None
) -> Route:
    """``preset_name`` may carry the slice (``elastic:9b``). Unknown names raise ``NotFound``."""
    if slice_name is None and ":" in preset_name:
        preset_name, slice_name = preset_name.split(":", 1)
    preset = config.presets.get(preset_name)
    if preset is None:
        raise NotFound(f"unknown preset '{preset_name}'; use one of {sorted(config.presets)}")
    label = f"preset:{preset_name}"
    if preset.slices:
        chosen = slice_name or preset.default_slice or ""
        if chosen not in preset.slices:
            raise NotFound(
                f"preset '{preset_name}' has no slice '{chosen}'; use one of {sorted(preset.slices)}"
            )
        label = f"{label}:{chosen}"
        target = _model_target(config, table, label, preset.slices[chosen], False)
    elif slice_name is not None:
        raise NotFound(f"preset '{preset_name}' has no slices; call it without ':{slice_name}'")
    elif preset.role:
        target = _role_target(config, table, label, preset.role, False)
    else:
        target = _model_target(config, table, label, preset.model or "", False)
    if table.stack is None:
        target = Target(label, target.model, skips.NO_ACTIVE_STACK)
    return Route(label, (replace(target, allow_empty=preset.allow_empty),))


def role_route(config: StacksConfig, table: RoleTable, role: str) -> Route:
    if role not in config.roles:
        raise NotFound(f"unknown role '{role}'; use one of {sorted(config.roles)}")
    label = f"role:{role}"
    return Route(label, (_role_target(config, table, label, role, False),))


def parse_reason_model(name: str) -> int | None:
    """The effort of a gateway model name ``reason`` / ``reason:effort=N``, else None."""
    match = _REASON_NAME.match(name)
    if match is None:
        return None
    effort = int(match.group(1)) if match.group(1) else DEFAULT_EFFORT
    if not 1 <= effort <= MAX_EFFORT:
        raise NotFound(f"effort must be 1..{MAX_EFFORT} in '{name}'")
    return effort


def gateway_route(config: StacksConfig, table: RoleTable, name: str) -> Route:
    """The route of an OpenAI ``model`` field: reason[:effort=N], a preset[:slice], or a role."""
    effort = parse_reason_model(name)
    if effort is not None:
        return reason_route(config, table, effort)
    if name.split(":", 1)[0] in config.presets:
        return preset_route(config, table, name)
    if name in config.roles:
        return role_route(config, table, name)
    raise NotFound(f"unknown model '{name}'; GET /v1/models lists the names this gateway serves")


def gateway_model_names(config: StacksConfig, table: RoleTable) -> list[str]:
    """Roles bound in the active stack, every preset (elastic slices spelled out), and ``reason``."""
    names: dict[str, None] = dict.fromkeys(
        r for r, m in table.bindings.items() if config.models[m].api is not Api.http
    )
    for pname, preset in config.presets.items():
        names.setdefault(pname, None)
        for slice_name in preset.slices:
            names.setdefault(f"{pname}:{slice_name}", None)
    names.setdefault(REASON_MODEL, None)
    return list(names)
