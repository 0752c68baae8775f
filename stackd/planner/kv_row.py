"""A line of the plan's KV table (computed by ``stackd.planner.kv``). Sizes in MiB unless named."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KvRow:
    """One member's KV cache: its cost per token, and on the GPU what the ledger leaves for it.

    ``room_mib`` is the VRAM the member may hold (``gpu_memory_utilization x total`` for a member
    that takes ``${GPU_MEMORY_UTILIZATION}``, its ledger budget otherwise); ``kv_mib`` is that room
    minus weights and overhead; ``kv_tokens`` the longest session it holds; ``sessions`` the
    concurrent sessions (context tokens, sessions) that fit. GPU figures are None on the CPU.
    """

    model: str
    source: str
    kv_rule: str  # whose rule sized the sliding-window layers (stackd.config.kv_engine)
    kv_bytes_per_token: int
    mamba_state_bytes: int
    context_tokens: int | None
    context_mib: float | None
    weights_mib: int
    overhead_mib: int
    gpu_memory_utilization: float | None = None
    room_mib: int | None = None
    kv_mib: int | None = None
    kv_tokens: int | None = None
    sessions: tuple[tuple[int, float], ...] = ()
    refused: bool = False
