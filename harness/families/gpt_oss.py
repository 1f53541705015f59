"""GPT-OSS: Llama's block layout with
- attention sinks: a learned logit per head that joins every softmax row and carries no value;
  sliding-window and full layers alternating as `layer_types` says; biases on q, k, v and o;
- every MLP a mixture of experts: a linear router with a bias, top k of its logits, softmax over
  those k; experts with biases and a clamped SwiGLU, gate * sigmoid(alpha * gate) * (up + 1),
  gate clamped above at `swiglu_limit` and up to +-`swiglu_limit`;
- experts stored transposed, [experts, d_model, 2 * hidden] with gate and up columns interleaved
  (gate0, up0, gate1, ...); they are de-interleaved into our gate-rows-first layout here.
Real checkpoints ship the experts MXFP4-quantised (`*_blocks`, `*_scales`); those are refused
with a message, since only float weights are read."""

import torch

from harness.errors import CheckpointError
from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename
from harness.models.config import ModelConfig

MODEL_TYPES = ("gpt_oss",)

_L = r"model\.layers\.(\d+)"
GPT_OSS_RULES = [
    (_L + r"\.self_attn\.sinks", r"blocks.\1.attn.sinks"),
    (_L + r"\.mlp\.router\.weight", r"blocks.\1.mlp.router.weight"),
    (_L + r"\.mlp\.router\.bias", r"blocks.\1.mlp.router.logit_bias"),
    (_L + r"\.mlp\.experts\.(gate_up_proj|down_proj)", r"blocks.\1.mlp.experts.\2"),
    (_L + r"\.mlp\.experts\.gate_up_proj_bias", r"blocks.\1.mlp.experts.gate_up_bias"),
    (_L + r"\.mlp\.experts\.down_proj_bias", r"blocks.\1.mlp.experts.down_bias"),
] + LLAMA_RULES


def config_from_hf(hf) -> ModelConfig:
    fields = llama_like_fields(hf)
    fields.update(mlp_bias=True)  # on every expert's projections
    return ModelConfig(
        family="gpt_oss",
        attn_sinks=True,
        n_experts=hf.num_local_experts,
        experts_per_token=hf.num_experts_per_tok,
        d_expert=hf.intermediate_size,
        router_scoring="softmax",
        router_norm_topk=True,  # softmax over the top k logits
        router_logit_bias=True,
        glu_limit=float(hf.swiglu_limit),
        glu_alpha=float(hf.swiglu_alpha),
        **fields,
    )


def _deinterleave(x: torch.Tensor) -> torch.Tensor:
    """[..., 2 * hidden] as gate0, up0, gate1, up1, ... -> all gates, then all ups."""
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)


def convert_state_dict(state_dict, cfg: ModelConfig):
    quantised = sorted(k for k in state_dict if k.endswith(("_blocks", "_scales")))
    if quantised:
        raise CheckpointError(
            f"this GPT-OSS checkpoint stores its experts MXFP4-quantised ({quantised[0]}, ...); "
            "dequantise it first (transformers: from_pretrained(..., quantization_config=Mxfp4Config(dequantize=True)) "
            "then save_pretrained)"
        )
    out = rename(state_dict, GPT_OSS_RULES)
    for key in list(out):
        if key.endswith("experts.gate_up_proj"):  # [experts, d_model, 2h] -> [experts, 2h, d_model]
            out[key] = _deinterleave(out[key]).transpose(1, 2).contiguous()
        elif key.endswith("experts.gate_up_bias"):
            out[key] = _deinterleave(out[key]).contiguous()
        elif key.endswith("experts.down_proj"):  # [experts, h, d_model] -> [experts, d_model, h]
            out[key] = out[key].transpose(1, 2).contiguous()
    return out
