"""Families: how each Hugging Face architecture maps onto ModelConfig and our weight names.

Each family module states MODEL_TYPES (transformers' `model_type` values), `config_from_hf`
and `convert_state_dict`; this registry finds the right one for a config.
"""

from __future__ import annotations

from types import ModuleType

from harness.errors import UnsupportedArchitectureError
from harness.families import deepseek_v3, gemma3, gpt2, gpt_oss, llama, mistral, mixtral, olmo2, qwen3, qwen3_moe

_MODULES = (gpt2, llama, qwen3, gemma3, mistral, mixtral, qwen3_moe, deepseek_v3, olmo2, gpt_oss)
FAMILIES: dict[str, ModuleType] = {t: m for m in _MODULES for t in m.MODEL_TYPES}


def supported_model_types() -> list[str]:
    return sorted(FAMILIES)


def family_for(hf_config) -> ModuleType:
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported model types: "
            + ", ".join(supported_model_types())
        )
    return FAMILIES[model_type]
