"""DeepSeek-V3: Llama's block layout with
- multi-head latent attention (compressed query and key/value latents, decoupled rope keys, rope
  pairs interleaved when `rope_interleave`), YaRN rope whose `mscale_all_dim` also rescales the
  softmax (by mscale squared);
- dense MLPs in the first `first_k_dense_replace` layers, DeepSeekMoE after: sigmoid router with
  the e_score_correction_bias steering the choice, group-limited routing, routed_scaling_factor,
  and shared experts;
- next-token-prediction (MTP) layers beyond num_hidden_layers in real checkpoints, not used here."""

import math
import re

from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename, rope_settings
from harness.families.hf_moe import MOE_RULES, stack_experts
from harness.models.config import ModelConfig

MODEL_TYPES = ("deepseek_v3",)

_A = r"model\.layers\.(\d+)\.self_attn"
MLA_RULES = [
    (_A + r"\.q_a_proj\.(weight|bias)", r"blocks.\1.attn.q_a_proj.\2"),
    (_A + r"\.q_a_layernorm\.weight", r"blocks.\1.attn.q_a_norm.w"),
    (_A + r"\.q_b_proj\.weight", r"blocks.\1.attn.q_b_proj.weight"),
    (_A + r"\.kv_a_proj_with_mqa\.(weight|bias)", r"blocks.\1.attn.kv_a_proj.\2"),
    (_A + r"\.kv_a_layernorm\.weight", r"blocks.\1.attn.kv_a_norm.w"),
    (_A + r"\.kv_b_proj\.weight", r"blocks.\1.attn.kv_b_proj.weight"),
]


def _mscale(factor: float, m: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0


def config_from_hf(hf) -> ModelConfig:
    fields = llama_like_fields(hf)
    _, scaling = rope_settings(hf)
    if scaling and scaling.get("factor") is None and scaling.get("original_max_position_embeddings"):
        # transformers then derives the YaRN factor from the context extension.
        scaling["factor"] = hf.max_position_embeddings / scaling["original_max_position_embeddings"]
    d_qk = hf.qk_nope_head_dim + hf.qk_rope_head_dim
    scale = d_qk**-0.5
    if scaling and scaling.get("mscale_all_dim"):
        scale *= _mscale(scaling["factor"], scaling["mscale_all_dim"]) ** 2
    fields.update(d_head=d_qk, n_kv_heads=hf.num_attention_heads, rope_scaling=scaling,
                  mixers=["latent_attention"] * hf.num_hidden_layers)
    n_experts = hf.n_routed_experts or 0
    return ModelConfig(
        family="deepseek_v3",
        kv_lora_rank=hf.kv_lora_rank,
        q_lora_rank=hf.q_lora_rank,
        v_head_dim=hf.v_head_dim,
        rotary_dim=hf.qk_rope_head_dim,
        rope_interleave=bool(hf.rope_interleave),
        attn_scale=scale,
        n_experts=n_experts,
        experts_per_token=hf.num_experts_per_tok if n_experts else 0,
        d_expert=hf.moe_intermediate_size,
        moe_layers=list(range(hf.first_k_dense_replace or 0, hf.num_hidden_layers)) if n_experts else None,
        router_scoring="sigmoid",
        router_bias=True,
        router_norm_topk=bool(hf.norm_topk_prob),
        router_n_group=hf.n_group or 1,
        router_topk_group=hf.topk_group or 1,
        routed_scaling=float(hf.routed_scaling_factor),
        n_shared_experts=(hf.n_shared_experts or 0) if n_experts else 0,
        **fields,
    )


def convert_state_dict(state_dict, cfg: ModelConfig):
    def used(key: str) -> bool:  # drop the MTP layers stored after the model's own
        layer = re.match(r"model\.layers\.(\d+)\.", key)
        return layer is None or int(layer.group(1)) < cfg.n_layers

    kept = {k: v for k, v in state_dict.items() if used(k)}
    return stack_experts(rename(kept, MLA_RULES + MOE_RULES + LLAMA_RULES))
