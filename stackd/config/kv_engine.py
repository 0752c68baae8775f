"""Which engine sizes a member's KV cache, and how: read from the member's command.

Engines differ where a model has sliding-window layers (Gemma 2/3, Command R7B …):

* vLLM keeps the window in a sliding layer;
* llama.cpp allocates the sliding layers at full context when ``swa_full`` is on, and otherwise
  ``pad(window x sequences + n_ubatch, 256)`` cells (``llama-kv-cache-iswa.cpp``). Its library
  default (``llama_context_default_params``) is on, which llama-cpp-python keeps ("using full-size
  SWA cache" in its log); llama-server's own default (``common.h``) is off, ``--swa-full`` turns it
  on. llama.cpp pads every cache to 256 cells (``llama-context.cpp``).

The command also says the context the engine allocates (``--n_ctx``, ``-c``, ``--max-model-len``),
and llama-cpp-python's server allocates 2,048 tokens when it says nothing. Pure: a Model in, a
value out; ``architecture.kv_engine`` and ``architecture.swa_full`` override what is read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePath

from stackd.config.models import Model

LLAMA_CPP, VLLM = "llama.cpp", "vllm"
LLAMA_CPP_PAD = 256  # cells: llama.cpp pads n_ctx and the SWA cache to a multiple of 256
UTILIZATION_FLAG = "--gpu-memory-utilization"
UTILIZATION_MACRO = "${GPU_MEMORY_UTILIZATION}"


@dataclass(frozen=True)
class KvEngine:
    """The rules one engine sizes a cache by, with the settings its command gives."""

    name: str  # LLAMA_CPP or VLLM
    source: str  # how it was recognised: "llama-cpp-python", "llama-server", "vllm", ...
    swa_full: bool = False
    n_ubatch: int = 512
    sequences: int = 1  # llama-server's parallel slots
    unified: bool = True  # one KV stream shared by the slots (llama-server's default)
    context_tokens: int | None = None  # the context the command allocates; None: the model's

    @property
    def pad(self) -> int:
        return LLAMA_CPP_PAD if self.name == LLAMA_CPP else 1

    def window_cells(self, window: int) -> int | None:
        """Cells a sliding-window layer holds; None: as many as a full layer (the context)."""
        if self.name == VLLM:
            return window
        if self.swa_full:
            return None
        if self.unified or self.sequences == 1:
            return _pad(window * self.sequences + self.n_ubatch)
        return self.sequences * _pad(window + self.n_ubatch)  # one stream per slot

    def describe(self, window: int | None) -> str:
        """The rule, as the KV table shows it."""
        name = "vLLM" if self.name == VLLM else "llama.cpp"
        head = name if self.source in (self.name, "vllm") else f"{name} ({self.source})"
        if not window:
            return head
        cells = self.window_cells(window)
        if cells is None:
            return f"{head}: full-size SWA"
        if self.name == VLLM:
            return f"{head}: SWA window {window:,}"
        times = f" x {self.sequences}" if self.sequences > 1 else ""
        return f"{head}: SWA {window:,}{times} + ubatch {self.n_ubatch} = {cells:,} cells"


def kv_engine(model: Model) -> KvEngine:
    """The engine ``model`` runs, as far as its command (or image) says, with the architecture's
    overrides applied; an engine not recognised is given vLLM's rule (the window)."""
    command = _command(model)
    image = model.docker.spec.image if model.docker and model.docker.spec else ""
    if "llama_cpp.server" in command:
        engine = _llama_cpp_python(command)
    elif any(PurePath(a).name in ("llama-server", "llama-server.exe") for a in command) or (
        "llama.cpp" in image or "llama-cpp" in image
    ):
        engine = _llama_server(command)
    elif "vllm" in image or any(_says_vllm(a) for a in command):
        engine = KvEngine(VLLM, "vllm", context_tokens=_size(_value(command, "--max-model-len")))
    else:
        engine = KvEngine(VLLM, "engine not recognised")
    arch = model.architecture
    if arch is not None and arch.kv_engine is not None and arch.kv_engine != engine.name:
        # The library's defaults: llama_context_default_params keeps sliding layers at full size.
        engine = KvEngine(
            arch.kv_engine, "architecture.kv_engine", swa_full=True, context_tokens=engine.context_tokens
        )
    elif arch is not None and arch.kv_engine is not None:
        engine = replace(engine, source="architecture.kv_engine")
    if arch is not None and arch.swa_full is not None:
        engine = replace(engine, swa_full=arch.swa_full)
    return engine


def _llama_cpp_python(command: list[str]) -> KvEngine:
    """llama-cpp-python's server: pydantic settings, one ``--name value`` per field; n_ctx 2048,
    n_batch and n_ubatch 512, one sequence; swa_full as llama.cpp's library default (on)."""
    batch = _int(_value(command, "--n_batch")) or 512
    ubatch = _int(_value(command, "--n_ubatch")) or 512
    swa_full = _value(command, "--swa_full")
    n_ctx = _int(_value(command, "--n_ctx"))
    return KvEngine(
        LLAMA_CPP,
        "llama-cpp-python",
        swa_full=swa_full is None or swa_full.lower() not in ("false", "0", "no", "off"),
        n_ubatch=min(batch, ubatch),
        context_tokens=2048 if n_ctx is None else (n_ctx or None),  # 0: the model's own
    )


def _llama_server(command: list[str]) -> KvEngine:
    """llama.cpp's llama-server (common.h, arg.cpp, server.cpp): n_batch 2048, n_ubatch 512,
    --swa-full off; without -np, 4 slots sharing one unified cache; -c 0 or none: the model's."""
    batch = _int(_value(command, "-b", "--batch-size")) or 2048
    ubatch = _int(_value(command, "-ub", "--ubatch-size")) or 512
    parallel = _int(_value(command, "-np", "--parallel"))
    auto = parallel is None or parallel < 0
    return KvEngine(
        LLAMA_CPP,
        "llama-server",
        swa_full="--swa-full" in command,
        n_ubatch=min(batch, ubatch),
        sequences=4 if parallel is None or parallel < 0 else max(parallel, 1),
        unified=auto or "-kvu" in command or "--kv-unified" in command,
        context_tokens=_int(_value(command, "-c", "--ctx-size")) or None,
    )


def _says_vllm(arg: str) -> bool:
    return PurePath(arg).name == "vllm" or arg.startswith(UTILIZATION_FLAG) or UTILIZATION_MACRO in arg


def _command(model: Model) -> list[str]:
    if model.process is not None:
        return list(model.process.command)
    if model.docker is not None and model.docker.spec is not None:
        return list(model.docker.spec.command or [])
    return []


def _value(command: list[str], *names: str) -> str | None:
    """The value of the last ``NAME VALUE`` or ``NAME=VALUE`` in ``command`` (the one that wins)."""
    found = None
    for i, arg in enumerate(command):
        for name in names:
            if arg == name and i + 1 < len(command):
                found = command[i + 1]
            elif arg.startswith(name + "="):
                found = arg[len(name) + 1 :]
    return found


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None  # a macro or a typo: the engine itself refuses it at start


def _size(text: str | None) -> int | None:
    """vLLM's --max-model-len: an integer, or with a suffix (1k = 1000, 1K = 1024)."""
    if text and text[-1] in "kmgKMG" and _int(text[:-1]) is not None:
        unit = {"k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}[text[-1]]
        return int(text[:-1]) * unit
    return _int(text)


def _pad(cells: int) -> int:
    return -(-cells // LLAMA_CPP_PAD) * LLAMA_CPP_PAD
