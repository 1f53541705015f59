"""Qwen3-MoE: Qwen3 (QK-norm) whose MLPs are mixtures of experts, except the layers listed in
`mlp_only_layers` or skipped by `decoder_sparse_step`. Softmax router, top k, and the chosen
weights renormalised only when `norm_topk_prob`; experts have `moe_intermediate_size`. A sliding
window, when enabled, applies to every layer."""

from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename
from harness.families.hf_moe import MOE_RULES, stack_experts
from harness.models.config import ModelConfig

MODEL_TYPES = ("qwen3_moe",)


def config_from_hf(hf) -> ModelConfig:
    fields = llama_like_fields(hf)
    if getattr(hf, "sliding_window", None):  # transformers clears it unless use_sliding_window
        fields.update(layer_types=["sliding"] * hf.num_hidden_layers, sliding_window=hf.sliding_window)
    n_experts = hf.num_experts or 0
    step, dense = hf.decoder_sparse_step or 1, set(hf.mlp_only_layers or [])
    moe_layers = [i for i in range(hf.num_hidden_layers) if i not in dense and (i + 1) % step == 0]
    return ModelConfig(
        family="qwen3_moe",
        qk_norm=True,
        n_experts=n_experts,
        experts_per_token=hf.num_experts_per_tok if n_experts else 0,
        d_expert=hf.moe_intermediate_size,
        moe_layers=moe_layers if n_experts else None,
        router_scoring="softmax",
        router_norm_topk=bool(hf.norm_topk_prob),
        **fields,
    )


def convert_state_dict(state_dict, cfg: ModelConfig):
    return stack_experts(rename(state_dict, MOE_RULES + LLAMA_RULES))
