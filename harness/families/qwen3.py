"""Qwen3 (dense): Llama plus RMSNorm on every query and key head (QK-norm), and sliding-window
layers above `max_window_layers` when `use_sliding_window` is set."""

from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename
from harness.models.config import ModelConfig

MODEL_TYPES = ("qwen3",)


def config_from_hf(hf) -> ModelConfig:
    return ModelConfig(family="qwen3", qk_norm=True, **llama_like_fields(hf))


def convert_state_dict(state_dict, cfg: ModelConfig):
    return rename(state_dict, LLAMA_RULES)
