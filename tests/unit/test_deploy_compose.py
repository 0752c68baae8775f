"""deploy/compose.yaml runs what the bundled config names, as stackd finds it.

stackd finds a docker member by its container name only (stackd.drivers.docker) and reaches it at
its endpoint: every docker member of config/model-stacks.yaml must be a service of that
container_name, labelled with its model, publishing the endpoint's port on the host's loopback,
left to stackd to start (profile ``models``, never restarted by Docker), with a GPU when it is
placed on one. No ``docker compose`` is installed here: the file is checked as data, and against
the Compose Specification's JSON Schema (tests/fixtures/compose-spec/).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from stackd.config.loader import load_config
from stackd.config.models import StacksConfig

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
BUNDLED = REPO / "config" / "model-stacks.yaml"
COMPOSE_SPEC = REPO / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # merge keys resolved
    return data


@pytest.fixture(scope="module")
def config() -> StacksConfig:
    return load_config(BUNDLED)


@pytest.fixture(scope="module")
def compose_spec() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(COMPOSE_SPEC.read_text(encoding="utf-8")))


def test_the_file_follows_the_compose_specification(
    compose: dict[str, Any], compose_spec: jsonschema.Draft7Validator
) -> None:
    problems = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in compose_spec.iter_errors(compose)
    ]
    assert problems == []
    # The check can fail: a misspelt key and a wrong type are found.
    broken = copy.deepcopy(compose)
    broken["services"]["stackd"]["network_mod"] = "host"
    broken["services"]["vision"]["restart"] = 3
    found = {tuple(e.absolute_path) for e in compose_spec.iter_errors(broken)}
    assert found == {("services", "stackd"), ("services", "vision", "restart")}


def services_by_container(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["container_name"]: s for s in compose["services"].values() if "container_name" in s}


def published(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host address, host port, container port) of each ``ports`` entry."""
    out = set()
    for entry in service.get("ports", []):
        address, host, container = str(entry).split(":")
        out.add((address, int(host), int(container.split("/")[0])))
    return out


def gpu_reserved(service: dict[str, Any]) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_every_docker_member_of_the_bundled_config_is_a_service_stackd_finds(
    compose: dict[str, Any], config: StacksConfig
) -> None:
    by_container = services_by_container(compose)
    docker_members = {name: m for name, m in config.models.items() if m.docker is not None}
    assert docker_members, "the bundled config has no docker member any more: update this test"
    for name, model in docker_members.items():
        assert model.docker is not None
        container = model.docker.container
        assert container in by_container, f"no service with container_name {container} (model {name})"
        service = by_container[container]
        assert service["labels"]["stackd.model"] == name
        assert "stackd.managed" not in service["labels"]  # it would let stackd re-create it from the spec
        assert service["profiles"] == ["models"]
        assert service["restart"] == "no"
        endpoint = urlsplit(model.endpoint)
        assert endpoint.port is not None
        assert any(
            address == "127.0.0.1" and host == endpoint.port for address, host, _ in published(service)
        ), f"{container} does not publish 127.0.0.1:{endpoint.port} (the endpoint of {name})"
        assert gpu_reserved(service) == (model.placement == "gpu"), container


def test_a_spec_in_the_config_and_the_service_agree(compose: dict[str, Any], config: StacksConfig) -> None:
    """Where the config could create the container itself, Compose makes the same one."""
    by_container = services_by_container(compose)
    for model in config.models.values():
        if model.docker is None or model.docker.spec is None:
            continue
        spec, service = model.docker.spec, by_container[model.docker.container]
        # a ${MACRO} stackd fills in at start is Compose's ${MACRO:-default} there
        assert [re.sub(r"\$\{(\w+):-[^}]*\}", r"${\1}", arg) for arg in service["command"]] == list(
            spec.command or []
        )
        for port, host_port in spec.ports.items():
            assert ("127.0.0.1", host_port, int(port.split("/")[0])) in published(service)


def test_stackd_runs_in_a_cpu_and_a_gpu_variant_each_with_its_ollama(
    compose: dict[str, Any], config: StacksConfig
) -> None:
    services = compose["services"]
    ollama_port = urlsplit(config.ollama.url).port
    for stackd, ollama, profile in (("stackd", "ollama", "cpu"), ("stackd-gpu", "ollama-gpu", "gpu")):
        daemon, server = services[stackd], services[ollama]
        assert daemon["profiles"] == server["profiles"] == [profile]
        assert daemon["depends_on"] == [ollama]
        assert gpu_reserved(daemon) == gpu_reserved(server) == (profile == "gpu")
        assert ("127.0.0.1", ollama_port, 11434) in published(server)
        # The members' endpoints are 127.0.0.1 ports of the host: stackd shares its network.
        assert daemon["network_mode"] == "host"
        assert daemon["restart"] == "unless-stopped"
        volumes = daemon["volumes"]
        assert "stackd-state:/var/lib/stackd" in volumes
        assert "/var/run/docker.sock:/var/run/docker.sock" in volumes
        config_mount = next(v for v in volumes if v.endswith(":ro"))
        source, target, _ = config_mount.split(":")
        assert (COMPOSE.parent / source).resolve() == BUNDLED
        assert daemon["environment"]["STACKD_CONFIG"] == target
        assert daemon["environment"]["STACKD_STATE_DIR"] == "/var/lib/stackd"
        assert daemon["group_add"] == ["${DOCKER_GID:-999}"]
    assert services["stackd-gpu"]["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert set(compose["volumes"]) >= {"stackd-state", "ollama"}


def test_no_secret_is_written_in_the_file() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for line in text.splitlines():
        if "TOKEN" in line or "API_KEY" in line:
            assert "${" in line or line.lstrip().startswith("#"), line
