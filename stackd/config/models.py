"""Pydantic models of ``model-stacks.yaml``.

These models are the single source of truth for the file's shape: the loader validates
against them, ``stackd config schema`` exports them as JSON Schema, and every other package
reads the frozen instances. Memory is written in GiB in the file (``memory_gb: 13``) and read
in MiB everywhere else (``Model.memory_mib``) so that ledgers add integers.

Cross-references (a stack naming an unknown model, a role bound twice …) are checked here in
``StacksConfig``'s validators, so that a config object that exists is a consistent one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from stackd.config.architecture import Architecture
from stackd.config.cluster import ClusterConfig

# Callers read a member's sections from here, where ``Model`` names them.
from stackd.config.fields import MIB_PER_GIB as MIB_PER_GIB
from stackd.config.fields import PROCESS_MACROS, SECONDS_PER_DAY, Frozen, Name, check_url
from stackd.config.reason import Preset, ReasonConfig
from stackd.config.runtimes import DEFAULT_PROCESS_HEALTH_PATH as DEFAULT_PROCESS_HEALTH_PATH
from stackd.config.runtimes import DEFAULT_PROCESS_START_TIMEOUT_S as DEFAULT_PROCESS_START_TIMEOUT_S
from stackd.config.runtimes import ContainerSpec as ContainerSpec
from stackd.config.runtimes import DockerRuntime as DockerRuntime
from stackd.config.runtimes import HealthCheck as HealthCheck
from stackd.config.runtimes import OllamaRuntime as OllamaRuntime
from stackd.config.runtimes import ProcessRuntime as ProcessRuntime
from stackd.config.runtimes import RemoteRuntime as RemoteRuntime
from stackd.config.runtimes import RestartPolicy as RestartPolicy
from stackd.config.schedules import IdleRule, Schedules


class Runtime(StrEnum):
    docker = "docker"
    process = "process"
    ollama = "ollama"
    remote = "remote"


class Placement(StrEnum):
    gpu = "gpu"
    cpu = "cpu"
    cloud = "cloud"


class Api(StrEnum):
    openai = "openai"
    ollama = "ollama"
    anthropic = "anthropic"
    gemini = "gemini"
    http = "http"  # a plain HTTP service (ComfyUI): health-checked, never routed by the gateway


class Lifecycle(StrEnum):
    always_on = "always_on"
    on_demand = "on_demand"


class Price(Frozen):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens.")


class Sampling(Frozen):
    """What a call to this model gets when its caller leaves a field out: engines differ in their
    own defaults (llama.cpp samples at temperature 0.8), and a small model answers sensibly only
    greedily. A value the caller gives always wins."""

    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="Answer length cap, in tokens.")


class Model(Frozen):
    """One model: where it runs, what it costs in memory, how to reach and check it."""

    description: str = ""
    runtime: Runtime
    placement: Placement
    api: Api
    endpoint: str | None = Field(
        None,
        description="Base URL of the model's API (OpenAI flavour includes /v1). "
        "Ollama models default to ollama.url; process models to http://127.0.0.1:${PORT}/v1.",
    )
    served_model: str | None = Field(
        None, description="Model name sent in API requests; defaults to the Ollama tag or the model's key."
    )
    always_stream: bool = Field(
        False,
        description="Call the model with stream: true even for a non-streamed answer, so that a caller "
        "that goes away stops the generation (llama-cpp-python's server finishes a non-streamed answer "
        "after its client has left).",
    )
    memory_gb: float = Field(0.0, ge=0, description="VRAM (gpu placement) or RAM (cpu placement) in GiB.")
    lifecycle: Lifecycle = Lifecycle.always_on
    swap_group: Name | None = Field(
        None,
        description="On-demand GPU models of one swap group replace each other; the largest is budgeted.",
    )
    # Idle longer than a day is always_on in all but name.
    idle_ttl_s: int | None = Field(
        None,
        gt=0,
        le=SECONDS_PER_DAY,
        description="On-demand models are released after this idle time.",
    )
    health: HealthCheck | None = None
    docker: DockerRuntime | None = None
    process: ProcessRuntime | None = None
    ollama: OllamaRuntime | None = None
    remote: RemoteRuntime | None = None
    price: Price | None = None
    sampling: Sampling | None = Field(
        None, description="Defaults for the fields a caller leaves out (temperature, top_p, max_tokens)."
    )
    architecture: Architecture | None = Field(
        None, description="Layers and heads for the KV-cache planner (docs/kv-planner.md)."
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_a_url(cls, endpoint: str | None, info: ValidationInfo) -> str | None:
        # ${PORT} & co. belong to a process member (or to a model whose runtime is already wrong).
        runtime = info.data.get("runtime")
        macros = PROCESS_MACROS if runtime in (None, Runtime.process) else frozenset()
        return None if endpoint is None else check_url(endpoint, macros)

    @property
    def memory_mib(self) -> int:
        return round(self.memory_gb * MIB_PER_GIB)

    @property
    def request_model(self) -> str | None:
        """The model name to put in API requests, if the config fixes one."""
        if self.served_model:
            return self.served_model
        if self.ollama:
            return self.ollama.tag
        return None

    @model_validator(mode="after")
    def _runtime_section_matches(self) -> Model:
        sections = {
            Runtime.docker: self.docker,
            Runtime.process: self.process,
            Runtime.ollama: self.ollama,
            Runtime.remote: self.remote,
        }
        if sections[self.runtime] is None:
            raise ValueError(
                f"runtime is {self.runtime.value} but the '{self.runtime.value}' section is missing; "
                f"add a '{self.runtime.value}:' section"
            )
        extra = [r.value for r, s in sections.items() if s is not None and r != self.runtime]
        if extra:
            raise ValueError(f"runtime is {self.runtime.value}; remove the '{', '.join(extra)}' section")
        if self.runtime == Runtime.remote and self.placement != Placement.cloud:
            raise ValueError("a remote model runs in the cloud; set placement: cloud")
        if self.runtime != Runtime.remote and self.placement == Placement.cloud:
            raise ValueError(
                "placement cloud needs a remote model; set runtime: remote or placement: gpu/cpu"
            )
        if (
            self.runtime == Runtime.ollama
            and self.placement == Placement.cpu
            and self.ollama is not None
            and not self.ollama.cpu_only
        ):
            raise ValueError("a CPU-placed Ollama model would use the GPU; set ollama.options.num_gpu: 0")
        if self.runtime in (Runtime.docker, Runtime.remote) and self.endpoint is None:
            raise ValueError(
                "endpoint is required for docker and remote models; set endpoint: http://HOST:PORT"
            )
        if self.swap_group and self.lifecycle != Lifecycle.on_demand:
            raise ValueError(
                "swap_group applies to on_demand models; set lifecycle: on_demand or drop swap_group"
            )
        return self


class RoleSpec(Frozen):
    description: str = ""
    required: bool = Field(False, description="A required role must be bound in every stack.")


class Stack(Frozen):
    description: str = ""
    roles: dict[Name, Name] = Field(
        default_factory=dict, description="role -> model serving it in this stack."
    )
    members: list[Name] = Field(
        default_factory=list, description="Models that run in the stack without a role."
    )
    reason_chain: list[Name] | None = Field(
        None, description="Order of reason() strategies in this stack; defaults to reason.default_chain."
    )
    idle: IdleRule | None = Field(
        None,
        description="Switch down to a lower stack after a time without calls; a call for a role only "
        "this stack has wakes it back (stackd/schedule/).",
    )

    @property
    def member_names(self) -> tuple[str, ...]:
        """Every model of the stack, role models first, each once, in a stable order."""
        seen: dict[str, None] = {}
        for model in [*self.roles.values(), *self.members]:
            seen.setdefault(model, None)
        return tuple(seen)


class GpuBudget(Frozen):
    device: int = Field(0, ge=0, description="NVML index of the GPU stackd budgets.")
    total_gb: float | None = Field(None, gt=0, description="Total VRAM in GiB; read from NVML when unset.")
    reserve_gb: float = Field(
        0.0,
        ge=0,
        description="VRAM kept free for the desktop and foreign processes (a floor; NVML may see more).",
    )


class OllamaServer(Frozen):
    url: Annotated[str, AfterValidator(check_url)] = Field(
        "http://127.0.0.1:11434", description="Base URL of the Ollama server."
    )


class Auth(Frozen):
    gateway_token_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="NAME of an env var holding a separate bearer token for /v1/*; defaults to the daemon token.",
    )


class StacksConfig(Frozen):
    """The whole ``model-stacks.yaml``."""

    version: int = Field(1, ge=1, le=1)
    default_stack: Name
    fallback_stacks: list[Name] = Field(
        default_factory=list,
        description="Tried in this order on a first start when default_stack cannot run on this machine "
        "(refused by the planner, or its switch failed); the log and status say why each was passed over.",
    )
    gpu: GpuBudget = GpuBudget()
    ollama: OllamaServer = OllamaServer()
    auth: Auth = Auth()
    roles: dict[Name, RoleSpec]
    models: dict[Name, Model]
    stacks: dict[Name, Stack]
    reason: ReasonConfig = ReasonConfig()
    presets: dict[Name, Preset] = Field(default_factory=dict)
    schedules: Schedules | None = Field(
        None, description="Windows by weekday and time (or cron) -> the stack that runs (stackd/schedule/)."
    )
    cluster: ClusterConfig | None = Field(
        None, description="A Docker Swarm whose services run the members that have docker.swarm."
    )

    @field_validator("stacks")
    @classmethod
    def _some_stack(cls, stacks: dict[str, Stack]) -> dict[str, Stack]:
        if not stacks:
            raise ValueError("no stack is defined; add one under stacks:")
        return stacks

    @model_validator(mode="after")
    def _references_resolve(self, info: ValidationInfo) -> StacksConfig:
        # The loader passes context {"defer_references": True} and reports every problem of
        # ``reference_problems`` with its own field path and line; any other construction
        # refuses an inconsistent object here.
        if info.context and info.context.get("defer_references"):
            return self
        problems = self.reference_problems()
        if problems:
            raise ValueError(problems[0][1])
        return self

    def reference_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every dangling or inconsistent reference, as (field path, message with a fix)."""
        from stackd.config.references import reference_problems

        return reference_problems(self)

    def chain_for(self, stack: str) -> list[str]:
        chain = self.stacks[stack].reason_chain
        return list(chain) if chain is not None else list(self.reason.default_chain)
