"""What the Ollama simulator holds: pulled model files, the registry it pulls from, loaded runners.

Faithful to Ollama's scheduler where stackd depends on it:

* a request's runner options are Ollama's defaults overlaid with the request's ``options``; a
  loaded model whose options differ from a new request's is reloaded (``needsReload``) and the
  reload is counted in ``reloads[tag]``;
* ``keep_alive`` of the latest request sets the runner's expiry (default 5 m, negative =
  forever, 0 = unload after the request); expired runners disappear from ``/api/ps``;
* ``num_gpu: 0`` puts the runner on the CPU (``size_vram`` 0).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

DEFAULT_KEEP_ALIVE_S = 300.0
# Options that shape the runner process; a difference forces a reload (Ollama's api.Runner).
RUNNER_DEFAULTS: dict[str, object] = {
    "num_ctx": 4096,
    "num_batch": 512,
    "num_gpu": -1,
    "main_gpu": 0,
    "use_mmap": None,
    "num_thread": 0,
}
SMALL_LAYERS = (1_429, 96)  # template and params blobs that follow the weights in a manifest
_FOREVER = datetime(2318, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: object) -> float | None:
    """Seconds a runner stays loaded after a request; ``None`` means forever (any negative value).

    Accepts what Ollama's ``api.Duration`` accepts: a number of seconds or a Go duration string.
    """
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            matches = _DURATION.findall(text)
            if not matches or "".join(n + u for n, u in matches) != text:
                raise ValueError(f'time: invalid duration "{text}"') from None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in matches)
    return None if seconds < 0 else seconds


def context_of(options: dict[str, object]) -> int:
    """The runner's context length in ``options`` (a request may send it as a number or a string)."""
    value = options["num_ctx"]
    return value if isinstance(value, int) else int(str(value))


def digest_of(name: str) -> str:
    """A stable sha256 hex digest standing in for a blob's content hash."""
    return hashlib.sha256(name.encode()).hexdigest()


def normalize_tag(name: str) -> str:
    """``llama3.2`` → ``llama3.2:latest``, as Ollama names models."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(frozen=True)
class ModelFile:
    """A pulled model: its manifest layers (weights first) and what ``/api/show`` reports."""

    tag: str
    layers: tuple[tuple[str, int], ...]  # (digest hex, bytes)
    family: str = "llama"
    context_length: int = 131_072
    modified_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def of(cls, tag: str, weights_bytes: int) -> ModelFile:
        sizes = (weights_bytes, *SMALL_LAYERS)
        layers = tuple((digest_of(f"{tag}#{i}"), size) for i, size in enumerate(sizes))
        return cls(tag=tag, layers=layers)

    @property
    def size(self) -> int:
        return sum(size for _, size in self.layers)

    @property
    def digest(self) -> str:
        return digest_of(f"{self.tag}#manifest")

    @property
    def details(self) -> dict[str, object]:
        billions = self.layers[0][1] / 0.6e9  # Q4_K_M holds about 0.6 bytes per parameter
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": f"{billions:.1f}B",
            "quantization_level": "Q4_K_M",
        }


@dataclass
class Runner:
    """A loaded model. ``expires_at`` is a clock time, or None for keep_alive forever."""

    model: ModelFile
    options: dict[str, object]
    expires_at: float | None
    size: int

    @property
    def num_ctx(self) -> int:
        return context_of(self.options)

    @property
    def size_vram(self) -> int:
        return 0 if self.options["num_gpu"] == 0 else self.size

    def expires_iso(self) -> str:
        if self.expires_at is None:
            return _FOREVER.isoformat()
        return datetime.fromtimestamp(self.expires_at, UTC).isoformat()


class OllamaState:
    """Pulled files, pullable registry and loaded runners of one simulated Ollama server."""

    def __init__(
        self,
        pulled: Mapping[str, int],
        registry: Mapping[str, int] | None,
        *,
        default_pull_bytes: int,
        kv_bytes_per_token: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.files = {normalize_tag(t): ModelFile.of(normalize_tag(t), n) for t, n in pulled.items()}
        self.registry = None if registry is None else {normalize_tag(t): n for t, n in registry.items()}
        self.default_pull_bytes = default_pull_bytes
        self.kv_bytes_per_token = kv_bytes_per_token
        self.clock = clock
        self.runners: dict[str, Runner] = {}
        self.loads: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()

    def pullable(self, tag: str) -> ModelFile | None:
        """The file a pull of ``tag`` would fetch, or None when the registry does not have it."""
        tag = normalize_tag(tag)
        if self.registry is None:
            return self.files.get(tag) or ModelFile.of(tag, self.default_pull_bytes)
        if tag in self.registry:
            return ModelFile.of(tag, self.registry[tag])
        return self.files.get(tag)

    def runner_options(self, options: object) -> dict[str, object]:
        given = options if isinstance(options, dict) else {}
        return {key: given.get(key, default) for key, default in RUNNER_DEFAULTS.items()}

    def schedule(self, model: ModelFile, options: object, keep_alive_s: float | None) -> tuple[Runner, bool]:
        """Load ``model`` or reuse its runner; returns (runner, whether it was (re)loaded now)."""
        wanted = self.runner_options(options)
        runner = self.running().get(model.tag)
        loaded_now = False
        if runner is None or runner.options != wanted:
            if runner is not None:
                self.reloads[model.tag] += 1
            self.loads[model.tag] += 1
            size = model.size + context_of(wanted) * self.kv_bytes_per_token
            runner = Runner(model=model, options=wanted, expires_at=None, size=size)
            self.runners[model.tag] = runner
            loaded_now = True
        self.touch(runner, keep_alive_s)
        return runner, loaded_now

    def touch(self, runner: Runner, keep_alive_s: float | None) -> None:
        """The latest request's keep_alive becomes the runner's TTL (Ollama's useLoadedRunner)."""
        runner.expires_at = None if keep_alive_s is None else self.clock() + keep_alive_s

    def expire(self, tag: str) -> None:
        self.runners.pop(normalize_tag(tag), None)

    def running(self) -> dict[str, Runner]:
        """Loaded runners, after dropping those whose keep_alive has run out."""
        now = self.clock()
        for tag in [t for t, r in self.runners.items() if r.expires_at is not None and r.expires_at <= now]:
            del self.runners[tag]
        return self.runners
