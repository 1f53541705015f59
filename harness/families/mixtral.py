"""Mixtral: Mistral with every MLP a mixture of experts. The router takes a softmax over all
experts, keeps the top k and renormalises their weights to sum to 1; each expert is a SwiGLU MLP
of `intermediate_size`."""

from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename
from harness.families.hf_moe import MOE_RULES, stack_experts
from harness.models.config import ModelConfig

MODEL_TYPES = ("mixtral",)


def config_from_hf(hf) -> ModelConfig:
    fields = llama_like_fields(hf)
    if getattr(hf, "sliding_window", None):
        fields.update(layer_types=["sliding"] * hf.num_hidden_layers, sliding_window=hf.sliding_window)
    return ModelConfig(
        family="mixtral",
        n_experts=hf.num_local_experts,
        experts_per_token=hf.num_experts_per_tok,
        router_scoring="softmax",
        router_norm_topk=True,
        **fields,
    )


def convert_state_dict(state_dict, cfg: ModelConfig):
    return stack_experts(rename(state_dict, MOE_RULES + LLAMA_RULES))
