"""Llama 3 / SmolLM2: RMSNorm, RoPE (with Llama 3 scaling), SwiGLU, grouped-query attention.
The reference layout every other rotary family here is stated against."""

from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename
from harness.models.config import ModelConfig

MODEL_TYPES = ("llama",)


def config_from_hf(hf) -> ModelConfig:
    return ModelConfig(family="llama", **llama_like_fields(hf))


def convert_state_dict(state_dict, cfg: ModelConfig):
    return rename(state_dict, LLAMA_RULES)
