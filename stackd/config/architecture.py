"""A model's ``architecture:`` section: what the KV-cache planner needs to know about its layers.

Three sources, best first, and explicit fields always win over what a file says:

* ``gguf: PATH``: the header of a local GGUF (llama.cpp's ``gguf`` package reads it);
* ``hf_config: PATH``: a Hugging Face ``config.json`` (what vLLM reads);
* the fields themselves (``layers``, ``kv_heads``, ``head_dim`` …).

The loader reads the file once (``stackd.config.architecture_files``) and fills every field the
section leaves unset, so the planner only ever sees numbers. Layer indices count from 0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Nemotron-H's ``hybrid_override_pattern``: one letter per layer.
PATTERN_LETTERS = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}


class Frozen(BaseModel):
    """As ``stackd.config.models.Frozen`` (which imports this module): strict and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MambaState(Frozen):
    """A Mamba-2 layer's fixed state per sequence (conv state + SSM state), as vLLM sizes it."""

    heads: int = Field(gt=0, description="mamba_num_heads.")
    head_dim: int = Field(gt=0, description="mamba_head_dim.")
    state_size: int = Field(gt=0, description="ssm_state_size (d_state).")
    groups: int = Field(1, gt=0, description="n_groups.")
    conv_kernel: int = Field(4, gt=1, description="conv_kernel (d_conv).")
    dtype_bytes: float = Field(
        2.0, gt=0, description="Bytes per state element: 2 (bf16, vLLM's default), 4 (f32, llama.cpp)."
    )

    @property
    def bytes_per_sequence(self) -> int:
        """``(conv_kernel - 1) x (inner + 2 x groups x state) + heads x head_dim x state`` elements."""
        inner = self.heads * self.head_dim
        conv = (self.conv_kernel - 1) * (inner + 2 * self.groups * self.state_size)
        ssm = inner * self.state_size
        return round((conv + ssm) * self.dtype_bytes)


class Architecture(Frozen):
    """What the KV arithmetic needs. Unset fields come from ``gguf`` or ``hf_config``."""

    gguf: str | None = Field(
        None, description="Path of a GGUF file (relative to this config file) whose header fills the rest."
    )
    hf_config: str | None = Field(
        None, description="Path of a Hugging Face config.json (relative to this config file)."
    )
    layers: int | None = Field(None, gt=0, description="Number of blocks (num_hidden_layers).")
    kv_heads: int | None = Field(
        None, gt=0, description="KV heads of an attention layer (num_key_value_heads)."
    )
    head_dim: int | None = Field(None, gt=0, description="Key size per head (head_dim, GGUF key_length).")
    value_head_dim: int | None = Field(None, gt=0, description="Value size per head; default head_dim.")
    attention_layers: list[int] | None = Field(
        None,
        description="Indices of the layers that hold KV cache; default: every layer (or the pattern's '*').",
    )
    hybrid_pattern: str | None = Field(
        None,
        pattern=r"^[M*E-]+$",
        description="Nemotron-H hybrid_override_pattern, one letter per layer: M Mamba, * attention, - MLP, E MoE.",
    )
    sliding_window: int | None = Field(None, gt=0, description="Tokens a sliding-window layer attends to.")
    sliding_window_layers: list[int] | None = Field(
        None,
        description="Attention layers that use the window; default: all of them when sliding_window is set.",
    )
    kv_engine: Literal["llama.cpp", "vllm"] | None = Field(
        None,
        description="Whose rules size the cache: llama.cpp (sliding-window layers at full size, or "
        "window + one micro-batch with swa_full false) or vllm (the window). Default: read from the "
        "member's command (llama_cpp.server, llama-server, vllm); otherwise vllm's rule.",
    )
    swa_full: bool | None = Field(
        None,
        description="llama.cpp only: sliding-window layers at full context (--swa-full). Default: "
        "the command's, else the engine's (llama-cpp-python: true; llama-server: false).",
    )
    kv_dtype_bytes: float = Field(
        2.0, gt=0, description="Bytes per KV element: 2 (f16/bf16), 1 (fp8), 0.5625 (q4_0)."
    )
    mamba: MambaState | None = Field(
        None,
        description="State of each Mamba layer (hybrid models): the pattern's M layers, or every layer "
        "that attention_layers leaves out.",
    )
    context_tokens: int | None = Field(
        None,
        gt=0,
        description="Longest context one session may use (vLLM --max-model-len, llama.cpp n_ctx); "
        "default: the model's trained context.",
    )
    weights_gb: float | None = Field(
        None, ge=0, description="VRAM the weights take; default: the GGUF file's size when there is one."
    )
    overhead_gb: float = Field(
        1.0,
        ge=0,
        description="VRAM beside weights and KV cache: activations, CUDA graphs, the CUDA context "
        "(vLLM logs it as non-KV memory).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Architecture:
        if self.gguf and self.hf_config:
            raise ValueError("an architecture has one source file; keep gguf or hf_config, not both")
        if self.hybrid_pattern and self.attention_layers is not None:
            raise ValueError(
                "hybrid_pattern already says which layers hold KV; drop attention_layers or hybrid_pattern"
            )
        if self.hybrid_pattern and self.layers is not None and len(self.hybrid_pattern) != self.layers:
            raise ValueError(
                f"hybrid_pattern has {len(self.hybrid_pattern)} letters but layers is {self.layers}; "
                "write one letter per layer"
            )
        if self.hybrid_pattern and "M" in self.hybrid_pattern and self.mamba is None and not self._sourced:
            raise ValueError("hybrid_pattern has Mamba layers (M); add a 'mamba:' section with their sizes")
        if self.sliding_window_layers is not None and self.sliding_window is None:
            raise ValueError("sliding_window_layers needs sliding_window: the window size in tokens")
        for field in ("attention_layers", "sliding_window_layers"):
            indices = getattr(self, field)
            if indices and self.layers is not None and not all(0 <= i < self.layers for i in indices):
                raise ValueError(f"{field} has an index outside 0..{self.layers - 1}; layers count from 0")
        if not self._sourced:
            missing = [f for f in ("layers", "kv_heads", "head_dim") if getattr(self, f) is None]
            if missing:
                raise ValueError(
                    f"architecture needs {', '.join(missing)}; set them, or gguf: PATH / hf_config: PATH"
                )
        return self

    @property
    def _sourced(self) -> bool:
        return bool(self.gguf or self.hf_config)

    @property
    def source(self) -> str:
        if self.gguf:
            return f"gguf {self.gguf}"
        if self.hf_config:
            return f"hf_config {self.hf_config}"
        return "config"
