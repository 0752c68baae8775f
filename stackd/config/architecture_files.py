"""Read a model's architecture from the file it ships in: a GGUF header or an HF ``config.json``.

``fill_architectures`` runs once at load: for every model whose ``architecture:`` names a file,
the fields the section leaves unset are filled from the file (explicit fields win). A file that
is missing or unreadable is a config problem at the section's line, like any other. The context
the member's command allocates (``--n_ctx``, ``-c``, ``--max-model-len``: ``kv_engine``) comes
before the file's trained context, after an explicit ``context_tokens``.

Where llama.cpp decides something the header does not say, this module says what llama.cpp
does (``_SWA_PATTERNS``: which layers of a Gemma 2/3 or Command R7B use the sliding window, as
``llama-model.cpp`` hard-codes it; recurrent state kept in f32).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stackd.config.architecture import Architecture, MambaState
from stackd.config.gguf_header import GGUF_HEADERS, HeaderCache, read_header
from stackd.config.kv_engine import kv_engine
from stackd.config.models import StacksConfig

# llama.cpp's ``hparams.set_swa_pattern(n)``: layer il is sliding unless il % n == n - 1.
_SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4}
_DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0}
_LLAMA_CPP_STATE_BYTES = 4.0  # llama.cpp keeps recurrent (Mamba) state in f32

Fields = dict[str, Any]


def fill_architectures(
    config: StacksConfig, base_dir: Path
) -> tuple[StacksConfig, list[tuple[tuple[str | int, ...], str]]]:
    """``config`` with every file-backed architecture filled in, and the problems (field path, message)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    models = dict(config.models)
    for name, model in config.models.items():
        arch = model.architecture
        if arch is None:
            continue
        context = kv_engine(model).context_tokens
        if not (arch.gguf or arch.hf_config):
            if context is not None and "context_tokens" not in arch.model_fields_set:
                models[name] = model.model_copy(
                    update={"architecture": arch.model_copy(update={"context_tokens": context})}
                )
            continue
        try:
            filled = fill_architecture(arch, base_dir, context)
        except ValueError as exc:
            problems.append((("models", name, "architecture"), str(exc)))
            continue
        models[name] = model.model_copy(update={"architecture": filled})
    return config.model_copy(update={"models": models}), problems


def fill_architecture(arch: Architecture, base_dir: Path, command_context: int | None = None) -> Architecture:
    """``arch`` with its unset fields read from its ``gguf`` or ``hf_config`` file (the context
    from ``command_context`` when there is one); raises ValueError."""
    source = arch.gguf or arch.hf_config
    assert source is not None
    path = Path(source) if Path(source).is_absolute() else base_dir / source
    if not path.is_file():
        key = "gguf" if arch.gguf else "hf_config"
        raise ValueError(f"{key} file {path} not found; check the path (relative to the config file)")
    from_file = read_gguf(path) if arch.gguf else read_hf_config(path)
    explicit = {f: getattr(arch, f) for f in arch.model_fields_set}
    try:
        from_command = {"context_tokens": command_context} if command_context else {}
        filled = Architecture.model_validate({**from_file, **from_command, **explicit})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: {where}: {first['msg']}; set it in the architecture section") from None
    missing = [f for f in ("layers", "kv_heads", "head_dim") if getattr(filled, f) is None]
    if missing:
        raise ValueError(f"{path} does not say {', '.join(missing)}; set it in the architecture section")
    return filled


def read_gguf(path: Path, cache: HeaderCache = GGUF_HEADERS) -> Fields:
    """The architecture fields a GGUF header gives: its small keys only (``gguf_header``: the
    vocabulary is skipped, not parsed), once per file version (``cache``)."""
    return cache.get(path, _read_gguf)


def _read_gguf(path: Path) -> Fields:
    try:
        header = read_header(path, _planner_key)
    except (ValueError, OSError) as exc:
        raise ValueError(
            f"{path} is not a readable GGUF file ({exc}); point gguf: at a .gguf model"
        ) from None

    def value(key: str) -> Any:
        return header.get(key)

    arch = value("general.architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{path} has no general.architecture in its header; is it a model GGUF?")
    layers = value(f"{arch}.block_count")
    heads = value(f"{arch}.attention.head_count")
    kv = value(f"{arch}.attention.head_count_kv")
    kv = kv if kv is not None else heads
    per_layer = list(kv) if isinstance(kv, list) else [kv] * int(layers)
    embed = value(f"{arch}.embedding_length")
    head_dim = value(f"{arch}.attention.key_length")
    if head_dim is None and embed and heads:
        head_dim = int(embed) // int(heads if not isinstance(heads, list) else max(heads))
    out: Fields = {
        "layers": layers,
        "kv_heads": max(per_layer) if per_layer else None,
        "head_dim": head_dim,
        "value_head_dim": value(f"{arch}.attention.value_length"),
        "context_tokens": value(f"{arch}.context_length"),
        "weights_gb": round(path.stat().st_size / 2**30, 4),
        **_layer_fields(header, arch, per_layer),
    }
    return {k: v for k, v in out.items() if v is not None}


def _layer_fields(header: Fields, arch: str, per_layer: list[object]) -> Fields:
    """Which layers hold what, when not all are alike: recurrent (Mamba) layers and their state,
    layers without attention, sliding-window layers."""

    def value(key: str) -> Any:
        return header.get(f"{arch}.{key}")

    out: Fields = {}
    attention = [i for i, n in enumerate(per_layer) if n]
    inner, state = value("ssm.inner_size"), value("ssm.state_size")
    if inner and state and len(attention) < len(per_layer):
        # llama.cpp's recurrent layers: no KV heads and (when it is per layer) no feed-forward.
        ff = value("feed_forward_length")
        ff = list(ff) if isinstance(ff, list) else [0] * len(per_layer)
        out["hybrid_pattern"] = "".join(
            "*" if kv else "-" if f else "M" for kv, f in zip(per_layer, ff, strict=True)
        )
    elif len(attention) < len(per_layer):
        out["attention_layers"] = attention
    window = value("attention.sliding_window")
    if window:
        out["sliding_window"] = window
        pattern = value("attention.sliding_window_pattern")
        every = _SWA_PATTERNS.get(arch)
        if isinstance(pattern, list):
            out["sliding_window_layers"] = [i for i, sliding in enumerate(pattern) if sliding]
        elif every:
            out["sliding_window_layers"] = [i for i in attention if i % every != every - 1]
    if inner and state:
        mamba_heads = value("ssm.time_step_rank") or 1
        out["mamba"] = MambaState(
            heads=mamba_heads,
            head_dim=int(inner) // int(mamba_heads),
            state_size=state,
            groups=value("ssm.group_count") or 1,
            conv_kernel=value("ssm.conv_kernel") or 4,
            dtype_bytes=_LLAMA_CPP_STATE_BYTES,
        )
    return out


def _planner_key(key: str) -> bool:
    """The keys ``_read_gguf`` reads: the architecture's own (``{arch}.*``) and its name; not the
    tokenizer's nor the other ``general.*`` metadata."""
    return key == "general.architecture" or not key.startswith(("tokenizer.", "general."))


def read_hf_config(path: Path) -> Fields:
    """The architecture fields of a Hugging Face ``config.json`` (a multimodal one's ``text_config``)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} is not a readable JSON file ({exc}); point hf_config: at a config.json"
        ) from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a config.json (a JSON object); point hf_config: at a config.json")
    text = raw.get("text_config")
    cfg: Mapping[str, Any] = {**raw, **text} if isinstance(text, dict) else raw
    layers, heads = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim") or (
        cfg["hidden_size"] // heads if cfg.get("hidden_size") and heads else None
    )
    out: Fields = {
        "layers": layers,
        "kv_heads": cfg.get("num_key_value_heads") or heads,
        "head_dim": head_dim,
        "context_tokens": cfg.get("max_position_embeddings"),
        "kv_dtype_bytes": _DTYPE_BYTES.get(str(cfg.get("torch_dtype") or cfg.get("dtype"))),
    }
    if pattern := cfg.get("hybrid_override_pattern"):
        out["hybrid_pattern"] = pattern
        out["mamba"] = MambaState(
            heads=cfg.get("mamba_num_heads") or 1,
            head_dim=cfg.get("mamba_head_dim") or 1,
            state_size=cfg.get("ssm_state_size") or 1,
            groups=cfg.get("n_groups") or 1,
            conv_kernel=cfg.get("conv_kernel") or 4,
        )
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
    types = cfg.get("layer_types")
    if isinstance(types, list):
        out["attention_layers"] = [
            i for i, t in enumerate(types) if t in ("full_attention", "sliding_attention")
        ]
        if window:
            out["sliding_window_layers"] = [i for i, t in enumerate(types) if t == "sliding_attention"]
    elif window and (every := cfg.get("sliding_window_pattern")) and layers:
        out["sliding_window_layers"] = [i for i in range(layers) if i % every != every - 1]
    if window:  # without a layer list, every attention layer slides (Mistral 7B v0.1)
        out["sliding_window"] = window
    return {k: v for k, v in out.items() if v is not None}
