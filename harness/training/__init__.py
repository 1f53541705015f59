"""Training recipes on a HookedLM: SFT, preference optimisation (DPO/cDPO/IPO/SimPO/ORPO/KTO),
GRPO and its variants, LoRA, and saving checkpoints that `harness.load` reads back.

    from harness.training import train_sft, SFTConfig, train_preference, PreferenceConfig
    train_sft(model, "sft.jsonl", SFTConfig(steps=100))
    train_preference(model, "pairs.jsonl", PreferenceConfig(loss="dpo", beta=0.1))
    save_checkpoint(model, "out/my-model", metadata={...})
"""

from harness.training.checkpoint import read_metadata, save_checkpoint
from harness.training.grpo import GRPOConfig, arithmetic_reward, arithmetic_task, mean_reward, train_grpo
from harness.training.lora import add_lora, merge_lora
from harness.training.preference import PreferenceConfig, preference_margin, train_preference
from harness.training.sft import SFTConfig, train_lm, train_sft

__all__ = [
    "SFTConfig", "train_sft", "train_lm",
    "PreferenceConfig", "train_preference", "preference_margin",
    "GRPOConfig", "train_grpo", "arithmetic_task", "arithmetic_reward", "mean_reward",
    "add_lora", "merge_lora", "save_checkpoint", "read_metadata",
]
