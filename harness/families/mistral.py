"""Mistral: Llama with sliding-window attention on every layer (when the config sets a window)."""

from harness.families.hf_common import LLAMA_RULES, llama_like_fields, rename
from harness.models.config import ModelConfig

MODEL_TYPES = ("mistral",)


def config_from_hf(hf) -> ModelConfig:
    fields = llama_like_fields(hf)
    window = getattr(hf, "sliding_window", None)
    if window:
        fields.update(layer_types=["sliding"] * hf.num_hidden_layers, sliding_window=window)
    return ModelConfig(family="mistral", **fields)


def convert_state_dict(state_dict, cfg: ModelConfig):
    return rename(state_dict, LLAMA_RULES)
