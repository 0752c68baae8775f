"""The KV-cache planner: what a model's architecture and the card's ledger leave for its KV cache.

Pure arithmetic (no I/O): the loader has already filled every ``architecture:`` field from its
GGUF or ``config.json``. The formula, with its sources, is in docs/kv-planner.md:

* one token costs ``kv_heads x (head_dim + value_head_dim) x kv_dtype_bytes`` in each layer that
  holds KV: the attention layers only (a hybrid's Mamba layers hold a fixed state per sequence
  instead), and a sliding-window layer holds what the member's engine gives it
  (``stackd.config.kv_engine``: vLLM the window; llama.cpp the full context, or the window plus one
  micro-batch, in 256-cell pads);
* a member whose command takes ``${GPU_MEMORY_UTILIZATION}`` (vLLM) may grow into the ledger's
  headroom (shared with the other such members): ``util = floor((slot + headroom) / total, 0.01)``;
  its KV room is ``util x total - weights - overhead``, as vLLM sizes it;
* a GPU member whose KV room holds less than one full context (``context_tokens``) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from stackd.config.architecture import Architecture
from stackd.config.kv_engine import UTILIZATION_MACRO, KvEngine, kv_engine
from stackd.config.models import MIB_PER_GIB, Model, Placement, StacksConfig
from stackd.planner.kv_row import KvRow
from stackd.planner.plan import Refusal, VramLedger

SESSION_CONTEXTS = (2048, 4096, 8192, 40960)
_MIB = 1 << 20


@dataclass(frozen=True)
class KvShape:
    """The per-token and per-sequence costs of one model's cache, in bytes."""

    layer_token_bytes: float  # one token in one KV layer (K and V)
    full_layers: int  # attention layers that keep every token
    window_layers: int  # sliding-window layers that keep at most ``window`` cells
    window: int  # what the engine keeps in a sliding layer (vLLM: the window; llama.cpp: padded)
    mamba_layers: int
    mamba_layer_bytes: int  # one sequence's state in one Mamba layer
    pad: int = 1  # the engine allocates cells in multiples of this (llama.cpp: 256)

    @property
    def bytes_per_token(self) -> int:
        """What one more token costs while every KV layer still grows (within the window)."""
        return round((self.full_layers + self.window_layers) * self.layer_token_bytes)

    @property
    def mamba_bytes(self) -> int:
        return self.mamba_layers * self.mamba_layer_bytes

    def sequence_bytes(self, tokens: int) -> int:
        """One session of ``tokens`` tokens (what the engine allocates for them): its KV plus its
        fixed Mamba state."""
        cells = -(-tokens // self.pad) * self.pad
        kept = self.full_layers * cells + self.window_layers * min(cells, self.window)
        return round(kept * self.layer_token_bytes) + self.mamba_bytes

    def tokens_in(self, room_bytes: int) -> int:
        """The longest single session ``room_bytes`` holds (0 when not even its Mamba state fits)."""
        tokens = self._tokens_in(room_bytes)
        return tokens if tokens == 2**31 - 1 else tokens // self.pad * self.pad

    def _tokens_in(self, room_bytes: int) -> int:
        room = room_bytes - self.mamba_bytes
        if room <= 0:
            return 0
        if self.window_layers and room >= self.sequence_bytes(self.window) - self.mamba_bytes:
            beyond = room - (self.sequence_bytes(self.window) - self.mamba_bytes)
            if not self.full_layers:
                return 2**31 - 1  # only windows: any length fits
            return self.window + int(beyond // (self.full_layers * self.layer_token_bytes))
        return int(room // ((self.full_layers + self.window_layers) * self.layer_token_bytes))


# No command to read: the window rule, as vLLM keeps it.
WINDOW_ONLY = KvEngine("vllm", "vllm")


def kv_shape(arch: Architecture, engine: KvEngine = WINDOW_ONLY) -> KvShape:
    """The cache shape of a filled architecture (``layers``, ``kv_heads``, ``head_dim`` are set)
    in ``engine``'s hands."""
    assert arch.layers is not None and arch.kv_heads is not None and arch.head_dim is not None
    value_dim = arch.value_head_dim or arch.head_dim
    if arch.hybrid_pattern:
        attention = [i for i, c in enumerate(arch.hybrid_pattern) if c == "*"]
        mamba = arch.hybrid_pattern.count("M")
    elif arch.attention_layers is not None:
        attention = list(arch.attention_layers)
        mamba = arch.layers - len(attention) if arch.mamba else 0
    else:
        attention, mamba = list(range(arch.layers)), 0
    cells = engine.window_cells(arch.sliding_window) if arch.sliding_window else None
    if cells is not None:
        sliding = set(attention if arch.sliding_window_layers is None else arch.sliding_window_layers)
        window_layers = len([i for i in attention if i in sliding])
    else:
        window_layers = 0  # no window, or the engine keeps the full context in it
    return KvShape(
        layer_token_bytes=arch.kv_heads * (arch.head_dim + value_dim) * arch.kv_dtype_bytes,
        full_layers=len(attention) - window_layers,
        window_layers=window_layers,
        window=cells or 0,
        mamba_layers=mamba,
        mamba_layer_bytes=arch.mamba.bytes_per_sequence if arch.mamba else 0,
        pad=engine.pad,
    )


def takes_utilization(model: Model) -> bool:
    """Whether the member's command asks for ``${GPU_MEMORY_UTILIZATION}`` (a vLLM member)."""
    command = model.process.command if model.process else None
    if command is None and model.docker and model.docker.spec:
        command = model.docker.spec.command
    return any(UTILIZATION_MACRO in arg for arg in command or ())


def kv_rows(
    config: StacksConfig, stack: str, vram: VramLedger | None
) -> tuple[tuple[KvRow, ...], list[Refusal]]:
    """A row per member of ``stack`` with an architecture, and a refusal per GPU member whose KV
    room is below one full context."""
    names = [n for n in config.stacks[stack].member_names if config.models[n].architecture is not None]
    growing = [
        n
        for n in names
        if config.models[n].placement == Placement.gpu and takes_utilization(config.models[n])
    ]
    rows, refusals = [], []
    for name in names:
        model = config.models[name]
        row = _row(config, name, model, vram, len(growing) if name in growing else 0)
        rows.append(row)
        if row.refused:
            refusals.append(Refusal("kv", _refusal(name, row), name))
    return tuple(rows), refusals


def _row(config: StacksConfig, name: str, model: Model, vram: VramLedger | None, sharers: int) -> KvRow:
    arch = model.architecture
    assert arch is not None
    engine = kv_engine(model)
    shape = kv_shape(arch, engine)
    context = arch.context_tokens
    weights = round((arch.weights_gb or 0.0) * MIB_PER_GIB)
    overhead = round(arch.overhead_gb * MIB_PER_GIB)
    base = KvRow(
        model=name,
        source=arch.source,
        kv_rule=engine.describe(arch.sliding_window),
        kv_bytes_per_token=shape.bytes_per_token,
        mamba_state_bytes=shape.mamba_bytes,
        context_tokens=context,
        context_mib=round(shape.sequence_bytes(context) / _MIB, 1) if context else None,
        weights_mib=weights,
        overhead_mib=overhead,
    )
    if model.placement != Placement.gpu or vram is None:
        return base  # a CPU engine allocates its context in RAM: no card to plan
    slot = _slot_mib(config, name, model, vram)
    if sharers:
        share = max(vram.headroom_mib, 0) // sharers
        util = (slot + share) * 100 // vram.total_mib / 100  # whole MiB: no float floor surprises
        room = round(util * vram.total_mib)
    else:
        util, room = None, slot
    kv_mib = max(room - weights - overhead, 0)
    tokens = shape.tokens_in(kv_mib * _MIB)
    sessions = tuple((ctx, round(kv_mib * _MIB / shape.sequence_bytes(ctx), 2)) for ctx in SESSION_CONTEXTS)
    return replace(
        base,
        gpu_memory_utilization=util,
        room_mib=room,
        kv_mib=kv_mib,
        kv_tokens=tokens,
        sessions=sessions,
        refused=context is not None and tokens < context,
    )


def _slot_mib(config: StacksConfig, name: str, model: Model, vram: VramLedger) -> int:
    """What the ledger budgets for the member: its own line, or its swap group's largest line."""
    budgets = {i.model: max(i.mib, i.measured_mib or 0) for i in vram.items}
    if model.swap_group is None:
        return budgets.get(name, model.memory_mib)
    group = [n for n, m in config.models.items() if m.swap_group == model.swap_group and n in budgets]
    return max((budgets[n] for n in group), default=model.memory_mib)


def _refusal(name: str, row: KvRow) -> str:
    at = (
        f"gpu_memory_utilization {row.gpu_memory_utilization:.2f} ({_gib(row.room_mib)})"
        if row.gpu_memory_utilization is not None
        else f"its {_gib(row.room_mib)} budget"
    )
    return (
        f"{name}: KV room {_gib(row.kv_mib)} holds {row.kv_tokens:,} tokens, below one full context of "
        f"{row.context_tokens:,} tokens ({_gib(row.context_mib)} at {row.kv_bytes_per_token / 1024:g} KiB "
        f"per token): {at} minus weights {_gib(row.weights_mib)} and overhead {_gib(row.overhead_mib)}; "
        "free VRAM for it (fewer GPU members, a smaller reserve), lower architecture.context_tokens, or "
        "use an fp8 KV cache (architecture.kv_dtype_bytes: 1)"
    )


def _gib(mib: float | None) -> str:
    return f"{(mib or 0) / MIB_PER_GIB:.2f} GiB"


def fill_utilization(
    config: StacksConfig, plan_kv: tuple[KvRow, ...], vram: VramLedger | None
) -> StacksConfig:
    """``config`` with ``${GPU_MEMORY_UTILIZATION}`` filled in the commands of the members that take
    it: the plan's computed value, else (a plan without the member's row) its ledger line's share
    of the card. A member with neither keeps the macro (and its engine says what it got)."""
    computed = {r.model: r.gpu_memory_utilization for r in plan_kv if r.gpu_memory_utilization is not None}
    models = dict(config.models)
    for name, model in config.models.items():
        if not takes_utilization(model):
            continue
        util = computed.get(name)
        if util is None and vram is not None and vram.total_mib > 0:
            util = model.memory_mib * 100 // vram.total_mib / 100
        if util is None:
            continue
        models[name] = _with_command(
            model, [a.replace(UTILIZATION_MACRO, f"{util:.2f}") for a in _command(model)]
        )
    return config.model_copy(update={"models": models})


def _command(model: Model) -> list[str]:
    if model.process is not None:
        return list(model.process.command)
    assert model.docker is not None and model.docker.spec is not None
    return list(model.docker.spec.command or [])


def _with_command(model: Model, command: list[str]) -> Model:
    if model.process is not None:
        return model.model_copy(update={"process": model.process.model_copy(update={"command": command})})
    assert model.docker is not None and model.docker.spec is not None
    spec = model.docker.spec.model_copy(update={"command": command})
    return model.model_copy(update={"docker": model.docker.model_copy(update={"spec": spec})})
