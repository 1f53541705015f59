"""What the Hugging Face families share: reading rope settings and renaming state-dict keys."""

from __future__ import annotations

import re
from typing import Any

import torch

from harness.errors import CheckpointError, UnsupportedArchitectureError

# Buffers some older checkpoints carry; they are recomputed, never loaded.
IGNORED_KEYS = re.compile(r".*(rotary_emb\.inv_freq|\.attn\.bias|\.attn\.masked_bias)$")

# Hugging Face's Llama layout, which Qwen3, Mistral and Gemma 3 share with small differences.
LLAMA_RULES = [
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.norm\.weight", "ln_final.w"),
    (r"lm_head\.weight", "unembed.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.ln1.w"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.ln2.w"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", r"blocks.\1.attn.\2_proj.\3"),
    (r"model\.layers\.(\d+)\.self_attn\.([qk])_norm\.weight", r"blocks.\1.attn.\2_norm.w"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.(weight|bias)", r"blocks.\1.mlp.\2_proj.\3"),
]


def rename(state_dict: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename keys by the first rule whose pattern matches the whole key."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for key, value in state_dict.items():
        if IGNORED_KEYS.fullmatch(key):
            continue
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(replacement, key)] = value
                break
        else:
            raise CheckpointError(f"unexpected weight {key!r} in the checkpoint; is it the architecture its config names?")
    return out


def rope_settings(hf: Any, layer_type: str | None = None) -> tuple[float, dict | None]:
    """(theta, scaling dict or None) from a transformers config, per layer type where it has them."""
    params = dict(getattr(hf, "rope_parameters", None) or {})
    if layer_type is not None and layer_type in params:
        params = dict(params[layer_type])
    theta = params.get("rope_theta", getattr(hf, "rope_theta", 10_000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    return float(theta), (params if kind != "default" else None)


# transformers' per-layer kinds (config.layer_types) -> (our mixer, the positions it sees). A family
# with other kinds of layer extends the table (Qwen3-Next: "linear_attention": ("gated_deltanet", "full")).
HF_LAYER_KINDS = {"full_attention": ("attention", "full"), "sliding_attention": ("attention", "sliding")}


def layer_pattern(hf: Any, kinds: dict[str, tuple[str, str]] = HF_LAYER_KINDS) -> dict[str, list[str] | None]:
    """The ModelConfig fields `mixers` and `layer_types` from a config's layer_types (None when it has none)."""
    types = getattr(hf, "layer_types", None)
    if not types:
        return {"mixers": None, "layer_types": None}
    unknown = sorted(set(types) - set(kinds))
    if unknown:
        raise UnsupportedArchitectureError(
            f"layer kinds {unknown} in layer_types are not supported here; supported: {', '.join(kinds)}"
        )
    return {"mixers": [kinds[t][0] for t in types], "layer_types": [kinds[t][1] for t in types]}


def token_ids(hf: Any) -> dict[str, Any]:
    return {
        "bos_token_id": getattr(hf, "bos_token_id", None),
        "eos_token_id": getattr(hf, "eos_token_id", None),
        "pad_token_id": getattr(hf, "pad_token_id", None),
    }


def llama_like_fields(hf: Any) -> dict[str, Any]:
    """The ModelConfig fields every Llama-descended config states the same way."""
    theta, scaling = rope_settings(hf)
    n_heads = hf.num_attention_heads
    pattern = layer_pattern(hf)
    types = pattern["layer_types"]
    return dict(
        d_model=hf.hidden_size,
        n_layers=hf.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(hf, "num_key_value_heads", None) or n_heads,
        d_head=getattr(hf, "head_dim", None) or hf.hidden_size // n_heads,
        d_mlp=hf.intermediate_size,
        d_vocab=hf.vocab_size,
        n_ctx=hf.max_position_embeddings,
        norm="rmsnorm",
        norm_eps=hf.rms_norm_eps,
        positional="rotary",
        rope_theta=theta,
        rope_scaling=scaling,
        **pattern,
        sliding_window=getattr(hf, "sliding_window", None) if types and "sliding" in types else None,
        act_fn=getattr(hf, "hidden_act", "silu"),
        gated_mlp=True,
        attn_bias=bool(getattr(hf, "attention_bias", False)),
        attn_out_bias=bool(getattr(hf, "attention_bias", False)),
        mlp_bias=bool(getattr(hf, "mlp_bias", False)),
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        name=getattr(hf, "_name_or_path", "") or "",
        **token_ids(hf),
    )
