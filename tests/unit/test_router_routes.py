"""Route resolution: effort thresholds, strategy targets against the active stack, presets, gateway names."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.config.loader import load_config
from stackd.config.models import StacksConfig
from stackd.errors import NotFound
from stackd.roles import RoleTable
from stackd.router import routes

BUNDLED = Path(__file__).resolve().parents[2] / "config" / "model-stacks.yaml"


@pytest.fixture(scope="module")
def config() -> StacksConfig:
    return load_config(BUNDLED, env={})


def table(config: StacksConfig, stack: str) -> RoleTable:
    spec = config.stacks[stack]
    return RoleTable(stack, dict(spec.roles), frozenset(spec.member_names))


def strategies(route: routes.Route) -> list[str]:
    return [t.strategy for t in route.targets]


@pytest.mark.parametrize(
    ("effort", "first"),
    [
        (1, "reflex"),
        (3, "reflex"),
        (4, "cloud_gpu"),
        (6, "cloud_gpu"),
        (7, "local_elastic"),
        (8, "local_elastic"),
        (9, "cloud_gpu"),
        (10, "cloud_gpu"),
    ],
)
def test_effort_rules_pick_where_the_chain_starts(config: StacksConfig, effort: int, first: str) -> None:
    assert routes.chain_for_effort(config, "elastic-hybrid", effort)[0] == first


def test_a_null_effort_chain_is_the_active_stacks_chain(config: StacksConfig) -> None:
    assert routes.chain_for_effort(config, "ollama-hybrid", 5) == [
        "local_elastic",
        "cloud_gpu",
        "cloud_api",
        "local_scheduler",
    ]
    assert routes.chain_for_effort(config, "cloud-offload", 5) == config.reason.default_chain


def test_strategies_resolve_against_the_snapshot(config: StacksConfig) -> None:
    route = routes.reason_route(config, table(config, "cloud-offload"), 5)
    assert [(t.strategy, t.model, t.skip) for t in route.targets] == [
        ("cloud_gpu", "deepseek-r1-cloud", None),
        ("local_elastic", "elastic-12b", "model 'elastic-12b' is not in active stack 'cloud-offload'"),
        ("cloud_api", "gemini-flash", None),
        ("cloud_api", "claude-sonnet", None),
        ("local_scheduler", "orchestrator-8b", None),
    ]
    assert route.targets[-1].queued


def test_an_unbound_role_is_skipped_with_the_stack_named(config: StacksConfig) -> None:
    route = routes.reason_route(config, table(config, "cloud-offload"), 2)
    assert route.targets[0].skip == "role 'reflex' is not bound in active stack 'cloud-offload'"


def test_a_model_already_tried_is_skipped(config: StacksConfig) -> None:
    chain = ["cloud_gpu", "local_elastic", "cloud_api"]
    snapshot = RoleTable(
        "elastic-hybrid",
        {"orchestrator": "orchestrator-8b", "deep_reasoning": "elastic-12b"},
        frozenset({"orchestrator-8b", "elastic-12b", "gemini-flash"}),
    )
    route = routes.resolve_chain(config, snapshot, chain)
    assert route.targets[1].skip == "already tried by strategy 'cloud_gpu'"
    assert [t.model for t in route.targets] == ["elastic-12b", "elastic-12b", "gemini-flash"]


def test_without_an_active_stack_everything_is_skipped(config: StacksConfig) -> None:
    route = routes.reason_route(config, RoleTable(None), 5)
    assert {t.skip for t in route.targets} == {"no active stack"}


def test_deep_reasoning_starts_with_the_maximum_quality_strategy(config: StacksConfig) -> None:
    route = routes.deep_reasoning_route(config, table(config, "ollama-hybrid"))
    assert route.targets[0].strategy == "cloud_gpu"
    assert route.label == "deep_reasoning"


@pytest.mark.parametrize(
    ("name", "slice_name", "model"),
    [
        ("elastic", None, "elastic-12b"),
        ("elastic", "9b", "elastic-9b"),
        ("elastic:6b", None, "elastic-6b"),
        ("reflex", None, "elastic-6b"),
        ("orchestrator", None, "orchestrator-8b"),
    ],
)
def test_presets_resolve_to_one_target(
    config: StacksConfig, name: str, slice_name: str | None, model: str
) -> None:
    route = routes.preset_route(config, table(config, "elastic-hybrid"), name, slice_name)
    assert [(t.model, t.skip) for t in route.targets] == [(model, None)]


def test_a_preset_outside_the_stack_is_a_skip_and_unknown_names_are_not_found(config: StacksConfig) -> None:
    route = routes.preset_route(config, table(config, "cloud-offload"), "elastic:9b")
    assert route.targets[0].skip == "model 'elastic-9b' is not in active stack 'cloud-offload'"
    with pytest.raises(NotFound, match="no slice '7b'"):
        routes.preset_route(config, table(config, "cloud-offload"), "elastic:7b")
    with pytest.raises(NotFound, match="unknown preset 'nope'"):
        routes.preset_route(config, table(config, "cloud-offload"), "nope")


def test_gateway_names_cover_roles_presets_slices_and_reason(config: StacksConfig) -> None:
    names = routes.gateway_model_names(config, table(config, "elastic-hybrid"))
    assert {
        "orchestrator",
        "reasoning",
        "elastic",
        "elastic:6b",
        "elastic:9b",
        "elastic:12b",
        "reason",
    } <= set(names)
    assert "diffusion" not in names  # ComfyUI speaks plain HTTP: not a chat model
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("reason", "reason"),
        ("reason:effort=8", "reason"),
        ("elastic:9b", "preset:elastic:9b"),
        ("reasoning", "role:reasoning"),
    ],
)
def test_gateway_model_field_resolves(config: StacksConfig, name: str, label: str) -> None:
    assert routes.gateway_route(config, table(config, "elastic-hybrid"), name).label == label


def test_gateway_reason_effort_is_honoured_and_bounded(config: StacksConfig) -> None:
    route = routes.gateway_route(config, table(config, "elastic-hybrid"), "reason:effort=8")
    assert route.targets[0].strategy == "local_elastic"
    with pytest.raises(NotFound):
        routes.gateway_route(config, table(config, "elastic-hybrid"), "reason:effort=11")
    with pytest.raises(NotFound, match="unknown model 'gpt-4o'"):
        routes.gateway_route(config, table(config, "elastic-hybrid"), "gpt-4o")
