from harness.models.config import ModelConfig
from harness.models.transformer import HookedLM, KVCache

__all__ = ["ModelConfig", "HookedLM", "KVCache"]
