"""GPT-2: learned positions, LayerNorm with bias, tanh-GELU MLP, multi-head attention, tied
embeddings. Its Conv1D weights are stored [in, out] and q/k/v fused, so they are transposed and split."""

import torch

from harness.families.hf_common import rename, token_ids
from harness.models.config import ModelConfig

MODEL_TYPES = ("gpt2",)

GPT2_RULES = [
    (r"transformer\.wte\.weight", "embed.weight"),
    (r"transformer\.wpe\.weight", "pos_embed.weight"),
    (r"transformer\.ln_f\.weight", "ln_final.w"),
    (r"transformer\.ln_f\.bias", "ln_final.b"),
    (r"lm_head\.weight", "unembed.weight"),
    (r"transformer\.h\.(\d+)\.ln_(1|2)\.weight", r"blocks.\1.ln\2.w"),
    (r"transformer\.h\.(\d+)\.ln_(1|2)\.bias", r"blocks.\1.ln\2.b"),
    (r"transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)", r"blocks.\1.attn.c_attn.\2"),
    (r"transformer\.h\.(\d+)\.attn\.c_proj\.(weight|bias)", r"blocks.\1.attn.o_proj.\2"),
    (r"transformer\.h\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.up_proj.\2"),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.down_proj.\2"),
]


def config_from_hf(hf) -> ModelConfig:
    n_heads = hf.n_head
    return ModelConfig(
        family="gpt2",
        d_model=hf.n_embd,
        n_layers=hf.n_layer,
        n_heads=n_heads,
        d_head=hf.n_embd // n_heads,
        d_mlp=hf.n_inner or 4 * hf.n_embd,
        d_vocab=hf.vocab_size,
        n_ctx=hf.n_positions,
        norm="layernorm",
        norm_eps=hf.layer_norm_epsilon,
        positional="learned",
        act_fn=hf.activation_function,
        gated_mlp=False,
        attn_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)),
        name=getattr(hf, "_name_or_path", "") or "",
        **token_ids(hf),
    )


def convert_state_dict(state_dict, cfg: ModelConfig):
    renamed = rename(state_dict, GPT2_RULES)
    out = {}
    for key, value in renamed.items():
        if ".c_attn." in key:
            # Conv1D keeps weights as [in, out]: transpose to nn.Linear's [out, in], then split q/k/v.
            prefix, kind = key.split(".c_attn.")
            parts = (value.T if kind == "weight" else value).chunk(3, dim=0)
            for name, part in zip("qkv", parts):
                out[f"{prefix}.{name}_proj.{kind}"] = part.contiguous()
        elif key.endswith("weight") and (".o_proj." in key or ".mlp." in key):
            out[key] = value.T.contiguous()
        else:
            out[key] = value
    return out
