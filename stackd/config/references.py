"""Cross-references of a config: names a stack, role, strategy or preset uses must exist, each
container belongs to one model, and always-on GPU models fit the card when its size is set.

Each problem is (field path, message with a fix); the loader maps the path to FILE:LINE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stackd.config.models import MIB_PER_GIB, Lifecycle, Placement

if TYPE_CHECKING:
    from stackd.config.models import StacksConfig

Problem = tuple[tuple[str | int, ...], str]


def reference_problems(config: StacksConfig) -> list[Problem]:
    """Every dangling or inconsistent reference, as (field path, message with a fix)."""
    out: list[Problem] = []
    models, roles = sorted(config.models), sorted(config.roles)
    if config.default_stack not in config.stacks:
        out.append(
            (
                ("default_stack",),
                f"unknown stack '{config.default_stack}'; use one of {sorted(config.stacks)}",
            )
        )
    for i, name in enumerate(config.fallback_stacks):
        if name not in config.stacks:
            out.append((("fallback_stacks", i), f"unknown stack '{name}'; use one of {sorted(config.stacks)}"))
    for sname, stack in config.stacks.items():
        for role, model in stack.roles.items():
            if role not in config.roles:
                out.append(
                    (
                        ("stacks", sname, "roles", role),
                        f"unknown role '{role}'; declare it under roles: or use one of {roles}",
                    )
                )
            if model not in config.models:
                out.append(
                    (("stacks", sname, "roles", role), f"unknown model '{model}'; use one of {models}")
                )
        for i, model in enumerate(stack.members):
            if model not in config.models:
                out.append((("stacks", sname, "members", i), f"unknown model '{model}'; use one of {models}"))
        if len(set(stack.members)) != len(stack.members):
            out.append((("stacks", sname, "members"), "a model is listed twice; list each member once"))
        for role, spec in config.roles.items():
            if spec.required and role not in stack.roles:
                out.append(
                    (
                        ("stacks", sname, "roles"),
                        f"required role '{role}' is not bound; add '{role}: MODEL'",
                    )
                )
        for i, strat in enumerate(stack.reason_chain or []):
            if strat not in config.reason.strategies:
                out.append(
                    (
                        ("stacks", sname, "reason_chain", i),
                        f"unknown strategy '{strat}'; use one of {sorted(config.reason.strategies)}",
                    )
                )
    for sname, strategy in config.reason.strategies.items():
        if strategy.role and strategy.role not in config.roles:
            out.append(
                (
                    ("reason", "strategies", sname, "role"),
                    f"unknown role '{strategy.role}'; use one of {roles}",
                )
            )
        for i, model in enumerate(strategy.models):
            if model not in config.models:
                out.append(
                    (
                        ("reason", "strategies", sname, "models", i),
                        f"unknown model '{model}'; use one of {models}",
                    )
                )
    for i, strat in enumerate(config.reason.default_chain):
        if strat not in config.reason.strategies:
            out.append(
                (
                    ("reason", "default_chain", i),
                    f"unknown strategy '{strat}'; use one of {sorted(config.reason.strategies)}",
                )
            )
    for i, rule in enumerate(config.reason.effort):
        for j, strat in enumerate(rule.chain or []):
            if strat not in config.reason.strategies:
                out.append(
                    (
                        ("reason", "effort", i, "chain", j),
                        f"unknown strategy '{strat}'; use one of {sorted(config.reason.strategies)}",
                    )
                )
    for pname, preset in config.presets.items():
        if preset.role and preset.role not in config.roles:
            out.append((("presets", pname, "role"), f"unknown role '{preset.role}'; use one of {roles}"))
        if preset.model and preset.model not in config.models:
            out.append((("presets", pname, "model"), f"unknown model '{preset.model}'; use one of {models}"))
        for slice_name, model in preset.slices.items():
            if model not in config.models:
                out.append(
                    (
                        ("presets", pname, "slices", slice_name),
                        f"unknown model '{model}'; use one of {models}",
                    )
                )
    containers: dict[str, str] = {}
    for mname, model_spec in config.models.items():
        if model_spec.docker:
            other = containers.setdefault(model_spec.docker.container, mname)
            if other != mname:
                out.append(
                    (
                        ("models", mname, "docker", "container"),
                        f"container '{model_spec.docker.container}' is already used by model '{other}'; give each model its own container",
                    )
                )
    out.extend(vram_problems(config))
    return out


def vram_problems(config: StacksConfig) -> list[Problem]:
    """Always-on GPU models of a stack above the card (only when the file sets gpu.total_gb)."""
    if config.gpu.total_gb is None:
        return []
    total = round(config.gpu.total_gb * MIB_PER_GIB)
    reserve = round(config.gpu.reserve_gb * MIB_PER_GIB)
    out: list[Problem] = []
    for sname, stack in config.stacks.items():
        always = [
            (m, config.models[m].memory_mib)
            for m in stack.member_names
            if m in config.models
            and config.models[m].placement == Placement.gpu
            and config.models[m].lifecycle == Lifecycle.always_on
        ]
        need = sum(mib for _, mib in always) + reserve
        if need > total:
            listing = ", ".join(f"{m} {mib / MIB_PER_GIB:g} GiB" for m, mib in always)
            out.append(
                (
                    ("stacks", sname),
                    f"always-on GPU models need {need / MIB_PER_GIB:g} GiB ({listing}, reserve "
                    f"{reserve / MIB_PER_GIB:g} GiB) but gpu.total_gb is {config.gpu.total_gb:g}; "
                    "move a model to on_demand or to the CPU, or lower gpu.reserve_gb",
                )
            )
    return out
