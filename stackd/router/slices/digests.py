"""Which weights answered: a digest per model, recorded with every routed answer.

- an Ollama member: its manifest digest as Ollama lists it (``/api/tags`` through the official
  client; ``/api/show`` carries no digest), ``sha256:<hex>``;
- a ``process`` member with a ``model_package``: the sha256 of the GGUF file the engine was given
  (STATE_DIR/models/<package>/<file>, where the process driver assembles it), hashed once in a
  worker thread and kept while the file's size and mtime stay;
- anything else: ``<runtime>:<served model>`` (a remote API does not say which weights it runs).

Digests are cached for ``ttl_s`` (an Ollama tag may be re-pulled); a lookup that fails gives
``unknown`` for that call and is tried again on the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from stackd.config.models import Runtime, StacksConfig
from stackd.drivers.model_packages import ModelPackageMissing, model_file_path

log = logging.getLogger("stackd.router.slices")
UNKNOWN = "unknown"
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def package_file(state_dir: Path, package: str) -> Path | None:
    """Where the process driver finds ``package``'s GGUF (stackd/drivers/model_packages.py)."""
    try:
        return model_file_path(state_dir, package)
    except (ModelPackageMissing, ImportError):
        return None


class DigestSource(Protocol):
    async def digest(self, model: str) -> str:
        """The digest of ``model``'s weights, or ``unknown``; never raises."""
        ...


class ModelDigests:
    def __init__(
        self,
        config: Callable[[], StacksConfig],
        state_dir: Path | None,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._state_dir = state_dir
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._files: dict[tuple[Path, int, int], str] = {}

    async def digest(self, model: str) -> str:
        cached = self._cache.get(model)
        if cached is not None and self._clock() - cached[0] < self._ttl_s:
            return cached[1]
        try:
            value = await self._lookup(model)
        except Exception as exc:  # a digest never fails a call: the answer is recorded as unknown
            log.warning("no digest for model %s: %s", model, type(exc).__name__)
            return UNKNOWN
        self._cache[model] = (self._clock(), value)
        return value

    async def _lookup(self, model: str) -> str:
        config = self._config()
        spec = config.models.get(model)
        if spec is None:
            return UNKNOWN
        if spec.runtime is Runtime.ollama and spec.ollama is not None:
            tag = spec.ollama.tag
            import ollama  # the client only where an Ollama member answers (docs/benchmarks.md)

            async with asyncio.timeout(5):
                listed = await ollama.AsyncClient(host=config.ollama.url).list()
            for entry in listed.models:
                if entry.model == tag and entry.digest:
                    return entry.digest if ":" in entry.digest[:8] else f"sha256:{entry.digest}"
            return UNKNOWN
        if spec.runtime is Runtime.process and spec.process is not None and spec.process.model_package:
            if self._state_dir is None:
                return UNKNOWN
            path = package_file(self._state_dir, spec.process.model_package)
            if path is None or not path.exists():
                return UNKNOWN
            stat = path.stat()
            key = (path, stat.st_size, stat.st_mtime_ns)
            if key not in self._files:
                self._files[key] = await asyncio.to_thread(file_sha256, path)
            return self._files[key]
        return f"{spec.runtime.value}:{spec.served_model or model}"
