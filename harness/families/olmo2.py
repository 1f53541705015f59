"""OLMo 2: Llama's layout with the norms moved after the sublayers and QK-norm over the whole
projection:
- no norm before attention or the MLP; RMSNorms on their outputs instead, before the residual
  add (`post_attention_layernorm`, `post_feedforward_layernorm`);
- RMSNorm on the full query and key projections (all heads' features at once, not per head),
  before they are split into heads and rotated."""

from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename
from harness.models.config import ModelConfig

MODEL_TYPES = ("olmo2",)

OLMO2_RULES = [
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.ln1_post.w"),
    (r"model\.layers\.(\d+)\.post_feedforward_layernorm\.weight", r"blocks.\1.ln2_post.w"),
] + LLAMA_RULES  # first match wins, so OLMo 2's meaning of post_attention_layernorm overrides


def config_from_hf(hf) -> ModelConfig:
    return ModelConfig(
        family="olmo2",
        pre_norm=False,
        post_attn_norm=True,
        post_mlp_norm=True,
        qk_norm=True,
        qk_norm_scope="projection",
        **llama_like_fields(hf),
    )


def convert_state_dict(state_dict, cfg: ModelConfig):
    return rename(state_dict, OLMO2_RULES)
