"""Gemma 3 (text): Llama's layout with
- interleaved sliding-window ("local") and global layers, each kind with its own rope base;
- (1 + w) RMSNorm everywhere, including QK-norm, and extra norms after attention and the MLP;
- GeGLU (tanh GELU) MLP, embeddings scaled by sqrt(d_model), attention scaled by
  query_pre_attn_scalar, and tanh soft-capping of the final logits where configured.
Gemma 3 configs still carry Gemma 2's `attn_logit_softcapping`, but the reference implementation
never applies it to attention scores, so neither do we."""

from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename, rope_settings
from harness.models.config import ModelConfig

MODEL_TYPES = ("gemma3_text",)

GEMMA_RULES = [
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.ln1_post.w"),
    (r"model\.layers\.(\d+)\.pre_feedforward_layernorm\.weight", r"blocks.\1.ln2.w"),
    (r"model\.layers\.(\d+)\.post_feedforward_layernorm\.weight", r"blocks.\1.ln2_post.w"),
] + LLAMA_RULES  # first match wins, so Gemma's meaning of post_attention_layernorm overrides


def config_from_hf(hf) -> ModelConfig:
    fields = llama_like_fields(hf)
    theta, scaling = rope_settings(hf, "full_attention")
    theta_local, scaling_local = rope_settings(hf, "sliding_attention")
    fields.update(
        act_fn=getattr(hf, "hidden_activation", None) or "gelu_pytorch_tanh",
        rope_theta=theta,
        rope_scaling=scaling,
        rope_theta_sliding=theta_local,
        rope_scaling_sliding=scaling_local,
        sliding_window=hf.sliding_window,
    )
    return ModelConfig(
        family="gemma3",
        norm_offset=1.0,
        post_attn_norm=True,
        post_mlp_norm=True,
        qk_norm=True,
        embed_scale=hf.hidden_size**0.5,
        attn_scale=hf.query_pre_attn_scalar**-0.5,
        final_softcap=getattr(hf, "final_logit_softcapping", None),
        **fields,
    )


def convert_state_dict(state_dict, cfg: ModelConfig):
    return rename(state_dict, GEMMA_RULES)
