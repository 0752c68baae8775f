"""What stackd creates a container from: pure functions of a model's ``docker.spec``.

``create_options`` gives the keyword arguments of the SDK's ``containers.create``: host ports on
127.0.0.1 only, the stackd labels (``stackd.managed=true``, ``stackd.model``, ``stackd.spec``),
one device request for the configured GPU when the spec asks for it, and a Docker HEALTHCHECK
when the spec gives a test. ``spec_digest`` is stored in the ``stackd.spec`` label so that the
driver can tell a container made from an older spec.
"""

from __future__ import annotations

import hashlib
from typing import Any

from stackd.config.models import ContainerSpec, DockerRuntime, HealthCheck

MANAGED_LABEL = "stackd.managed"
MODEL_LABEL = "stackd.model"
SPEC_LABEL = "stackd.spec"
# Docker runs a HEALTHCHECK every `interval` (30 s by default): too slow to notice readiness.
HEALTHCHECK_INTERVAL_S = 1.0
HEALTHCHECK_RETRIES = 3
NS_PER_S = 1_000_000_000


def spec_digest(spec: ContainerSpec, gpu_device: int) -> str:
    """A short digest of everything a container is created from; a change means re-create."""
    text = f"{spec.model_dump_json()}|gpu={gpu_device}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def create_options(
    name: str, runtime: DockerRuntime, health: HealthCheck | None, gpu_device: int
) -> dict[str, Any]:
    """Keyword arguments of ``containers.create`` for model ``name``'s spec (which must be set)."""
    spec = runtime.spec
    assert spec is not None
    digest = spec_digest(spec, gpu_device)
    labels = {**spec.labels, MANAGED_LABEL: "true", MODEL_LABEL: name, SPEC_LABEL: digest}
    options: dict[str, Any] = {
        "image": spec.image,
        "name": runtime.container,
        "command": spec.command,
        "environment": dict(spec.env),
        "labels": labels,
        "ports": {port: ("127.0.0.1", host_port) for port, host_port in spec.ports.items()},
    }
    if spec.gpu:
        from docker.types import DeviceRequest  # the SDK: loaded by the client that creates it

        options["device_requests"] = [DeviceRequest(device_ids=[str(gpu_device)], capabilities=[["gpu"]])]
    if spec.healthcheck:
        check = health or HealthCheck.model_validate({})
        options["healthcheck"] = {
            "test": list(spec.healthcheck),
            "interval": int(HEALTHCHECK_INTERVAL_S * NS_PER_S),
            "timeout": int(check.timeout_s * NS_PER_S),
            "retries": HEALTHCHECK_RETRIES,
            # Failures while the server loads its weights do not count towards "unhealthy".
            "start_period": int(check.start_timeout_s * NS_PER_S),
        }
    return options
