"""In-memory fakes of the driver protocols, with failure injection, for unit tests and the API's tests.

Why they ship in the package rather than under tests/: ``bench/gateway.py`` builds the daemon's
real app over them (a benchmark must run from a checkout without Docker or engines), and they are
the reference implementation of each protocol of ``base``: the checks at the end of this module
make ``mypy --strict stackd`` fail the moment a fake and its protocol part. Nothing in the product
imports them (tests/unit/test_import_rules.py keeps the parts' imports in check; ``stackd serve``
always builds real drivers in ``stackd.daemon``).

They keep the state a real engine would keep (which containers run, which tags are pulled and
loaded) in plain sets that tests read and set directly, and they fail the way real drivers do:
only ``DriverUnavailable`` (engine down) or ``DriverFailed`` (engine refused). ``actions`` logs
every mutating call in order as ``(verb, name)``.

``after_action`` is called after each mutating call succeeded; a test uses it to simulate a crash
at a chosen point (raise a ``BaseException`` from it: the manager treats ``Exception`` as a step
failure and undoes, but lets anything else through untouched, as a SIGKILL would).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from stackd.config.models import Model, OllamaRuntime
from stackd.drivers.base import (
    ContainerDriver,
    HealthChecker,
    LoadedModel,
    OllamaDriver,
    ProcessDriver,
    ProcessInfo,
    PullProgress,
    RemoteProber,
)
from stackd.errors import DriverFailed, DriverUnavailable, ProbeTimedOut

AfterAction = Callable[[str, str], None]


@dataclass
class MemoryContainers:
    """Containers by name. ``running_containers`` holds the names of the running ones.

    ``fail_start``: models whose container cannot start (image missing); ``unhealthy``: models
    whose container starts but never passes its health check (it is left running, as Docker
    would); ``fail_stop``: models whose stop fails; ``down``: the engine is unreachable.
    """

    running_containers: set[str] = field(default_factory=set)
    fail_start: set[str] = field(default_factory=set)
    unhealthy: set[str] = field(default_factory=set)
    fail_stop: set[str] = field(default_factory=set)
    down: bool = False
    actions: list[tuple[str, str]] = field(default_factory=list)
    after_action: AfterAction | None = None

    def _check_up(self) -> None:
        if self.down:
            raise DriverUnavailable("cannot reach the Docker engine (DOCKER_HOST=unix:///memory/docker.sock)")

    async def running(self, models: Mapping[str, Model]) -> frozenset[str]:
        self._check_up()
        up = self.running_containers
        return frozenset(name for name, m in models.items() if m.docker and m.docker.container in up)

    async def ensure_running(self, name: str, model: Model) -> None:
        self._check_up()
        assert model.docker is not None
        container = model.docker.container
        if container in self.running_containers:
            return
        if name in self.fail_start:
            raise DriverFailed(f"container {container}: image not found (injected failure)")
        self.running_containers.add(container)
        self.actions.append(("start", name))
        await asyncio.sleep(0)
        if name in self.unhealthy:
            raise DriverFailed(f"container {container} did not become healthy (injected failure)")
        self._after("start", name)

    async def ensure_stopped(self, name: str, model: Model) -> None:
        self._check_up()
        assert model.docker is not None
        if name in self.fail_stop:
            raise DriverFailed(f"container {model.docker.container}: stop failed (injected failure)")
        if model.docker.container not in self.running_containers:
            return
        self.running_containers.discard(model.docker.container)
        self.actions.append(("stop", name))
        await asyncio.sleep(0)
        self._after("stop", name)

    def _after(self, verb: str, name: str) -> None:
        if self.after_action is not None:
            self.after_action(verb, name)


@dataclass
class MemoryProcesses:
    """Engine processes by member name: ``running_processes`` holds the live ones, ``pids`` their
    (fake) PID, which changes at every start. ``fail_start``: members whose engine exits before it
    is ready; ``fail_stop``: members whose stop fails; ``rss_mib``: what each one measures."""

    running_processes: set[str] = field(default_factory=set)
    pids: dict[str, int] = field(default_factory=dict)
    fail_start: set[str] = field(default_factory=set)
    fail_stop: set[str] = field(default_factory=set)
    rss_mib: dict[str, int] = field(default_factory=dict)
    actions: list[tuple[str, str]] = field(default_factory=list)
    after_action: AfterAction | None = None
    _next_pid: int = 1000

    async def running(self, models: Mapping[str, Model]) -> frozenset[str]:
        return frozenset(name for name in models if name in self.running_processes)

    async def ensure_running(self, name: str, model: Model) -> None:
        assert model.process is not None
        if name in self.running_processes:
            return
        if name in self.fail_start:
            raise DriverFailed(
                f"process member '{name}' exited with code 1 before it was ready; "
                "last log lines: injected failure"
            )
        self._next_pid += 1
        self.pids[name] = self._next_pid
        self.running_processes.add(name)
        self.actions.append(("start", name))
        await asyncio.sleep(0)
        if self.after_action is not None:
            self.after_action("start", name)

    async def ensure_stopped(self, name: str, model: Model) -> None:
        if name in self.fail_stop:
            raise DriverFailed(f"process member '{name}': stop failed (injected failure)")
        if name not in self.running_processes:
            return
        self.running_processes.discard(name)
        self.actions.append(("stop", name))
        await asyncio.sleep(0)
        if self.after_action is not None:
            self.after_action("stop", name)

    def processes(self) -> list[ProcessInfo]:
        return [
            ProcessInfo(
                model=name,
                state="ready" if name in self.running_processes else "stopped",
                pid=self.pids.get(name) if name in self.running_processes else None,
                port=None,
                endpoint=None,
                started_at=None,
                restarts=0,
                exits=0,
                last_exit=None,
                log_path=None,
                pids=(self.pids[name],) if name in self.running_processes else (),
                rss_mib=self.rss_mib.get(name) if name in self.running_processes else None,
            )
            for name in sorted(set(self.pids) | self.running_processes)
        ]

    def log_tail(self, name: str, lines: int = 20) -> list[str]:
        return []


@dataclass
class MemoryOllama:
    """An Ollama server: ``tags`` pulled, ``loaded_tags`` loaded (tag → options it was loaded with).

    ``fail_pull``: tag → bytes after which its pull fails; ``fail_load``: tags that cannot load;
    ``down``: the server does not answer. A pull streams ``layers`` layers of ``layer_bytes``.
    """

    tags: set[str] = field(default_factory=set)
    loaded_tags: dict[str, OllamaRuntime] = field(default_factory=dict)
    fail_pull: dict[str, int] = field(default_factory=dict)
    fail_load: set[str] = field(default_factory=set)
    down: bool = False
    layers: int = 2
    layer_bytes: int = 1000
    chunk_bytes: int = 250
    actions: list[tuple[str, str]] = field(default_factory=list)
    after_action: AfterAction | None = None
    url: str = "http://memory-ollama:11434"

    def _check_up(self) -> None:
        if self.down:
            raise DriverUnavailable(f"cannot reach Ollama at {self.url}: connection refused")

    async def list_tags(self) -> frozenset[str]:
        self._check_up()
        return frozenset(self.tags)

    async def loaded(self) -> list[LoadedModel]:
        self._check_up()
        return [
            LoadedModel(
                tag=tag,
                size=self.layers * self.layer_bytes,
                size_vram=0 if runtime.cpu_only else self.layers * self.layer_bytes,
            )
            for tag, runtime in sorted(self.loaded_tags.items())
        ]

    async def pull(self, tag: str) -> AsyncIterator[PullProgress]:
        self._check_up()
        yield PullProgress(tag=tag, status="pulling manifest")
        fail_after = self.fail_pull.get(tag)
        done = 0
        for layer in range(self.layers):
            digest = f"sha256:{layer:064x}"
            for completed in range(self.chunk_bytes, self.layer_bytes + 1, self.chunk_bytes):
                if fail_after is not None and done + self.chunk_bytes > fail_after:
                    raise DriverFailed(
                        f"pull of {tag} failed after {done} bytes: unexpected EOF (injected failure)"
                    )
                done += self.chunk_bytes
                await asyncio.sleep(0)
                yield PullProgress(
                    tag=tag,
                    status=f"pulling {digest[7:19]}",
                    digest=digest,
                    completed=completed,
                    total=self.layer_bytes,
                )
        self.tags.add(tag)
        self.actions.append(("pull", tag))
        yield PullProgress(tag=tag, status="success")
        self._after("pull", tag)

    async def load(self, runtime: OllamaRuntime) -> None:
        self._check_up()
        if runtime.tag not in self.tags:
            raise DriverFailed(f"model '{runtime.tag}' not found, try pulling it first")
        if runtime.tag in self.fail_load:
            raise DriverFailed(f"loading {runtime.tag} failed (injected failure)")
        if self.loaded_tags.get(runtime.tag) == runtime:
            return
        self.loaded_tags[runtime.tag] = runtime
        self.actions.append(("load", runtime.tag))
        await asyncio.sleep(0)
        self._after("load", runtime.tag)

    async def unload(self, runtime: OllamaRuntime) -> None:
        self._check_up()
        if self.loaded_tags.pop(runtime.tag, None) is None:
            return
        self.actions.append(("unload", runtime.tag))
        await asyncio.sleep(0)
        self._after("unload", runtime.tag)

    def _after(self, verb: str, name: str) -> None:
        if self.after_action is not None:
            self.after_action(verb, name)


@dataclass
class MemoryRemotes:
    """Remote endpoints; the models in ``down`` do not answer. ``probes`` counts calls per model."""

    down: set[str] = field(default_factory=set)
    probes: dict[str, int] = field(default_factory=dict)

    async def probe(self, name: str, model: Model) -> None:
        self.probes[name] = self.probes.get(name, 0) + 1
        if name in self.down:
            raise DriverUnavailable(f"remote {name} at {model.endpoint} does not answer (injected failure)")


@dataclass
class MemoryHealth:
    """Health endpoints; the models in ``unhealthy`` fail their probe, those in ``timing_out`` time out."""

    unhealthy: set[str] = field(default_factory=set)
    timing_out: set[str] = field(default_factory=set)  # a busy single-slot engine: no answer in time
    checks: dict[str, int] = field(default_factory=dict)

    async def check(self, name: str, model: Model) -> None:
        self.checks[name] = self.checks.get(name, 0) + 1
        if name in self.timing_out:
            raise ProbeTimedOut(f"health probe of '{name}' got no answer within 2 s (injected)")
        if name in self.unhealthy:
            raise DriverUnavailable(f"{name}: health endpoint answered 503 (injected failure)")


# Each fake is its protocol (mypy --strict stackd checks these lines).
_containers: ContainerDriver = MemoryContainers()
_processes: ProcessDriver = MemoryProcesses()
_ollama: OllamaDriver = MemoryOllama()
_remotes: RemoteProber = MemoryRemotes()
_health: HealthChecker = MemoryHealth()
