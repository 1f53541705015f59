"""Training recipes on a HookedLM: SFT, preference optimisation (DPO/cDPO/IPO/SimPO/ORPO/KTO),
GRPO and its variants, Bradley-Terry reward models, PPO against a reward model (RLHF),
best-of-n sampling, LoRA, and saving checkpoints that `harness.load` reads back.

    from harness.training import train_sft, SFTConfig, train_preference, PreferenceConfig
    train_sft(model, "sft.jsonl", SFTConfig(steps=100))
    train_preference(model, "pairs.jsonl", PreferenceConfig(loss="dpo", beta=0.1))
    save_checkpoint(model, "out/my-model", metadata={...})
    rm = RewardModel.from_lm(model); train_reward_model(rm, "pairs.jsonl", RewardConfig(steps=200))
    train_ppo(policy, rm, prompts, PPOConfig(steps=40))
"""

from harness.training.checkpoint import read_metadata, save_checkpoint
from harness.training.grpo import GRPOConfig, arithmetic_reward, arithmetic_task, mean_reward, train_grpo
from harness.training.best_of_n import best_of_n
from harness.training.lora import add_lora, merge_lora
from harness.training.ppo import PPOConfig, evaluate_policy, train_ppo
from harness.training.preference import PreferenceConfig, preference_margin, train_preference
from harness.training.reward import RewardModel, load_reward_model, save_reward_model, score_texts
from harness.training.reward_train import RewardConfig, pairwise_accuracy, train_reward_model
from harness.training.sft import SFTConfig, train_lm, train_sft

__all__ = [
    "SFTConfig", "train_sft", "train_lm",
    "PreferenceConfig", "train_preference", "preference_margin",
    "GRPOConfig", "train_grpo", "arithmetic_task", "arithmetic_reward", "mean_reward",
    "RewardModel", "RewardConfig", "train_reward_model", "pairwise_accuracy", "score_texts",
    "save_reward_model", "load_reward_model", "best_of_n",
    "PPOConfig", "train_ppo", "evaluate_policy",
    "add_lora", "merge_lora", "save_checkpoint", "read_metadata",
]
