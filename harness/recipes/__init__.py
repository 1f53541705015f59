"""Alignment recipes on real models: a base checkpoint, an adapter method and a preference set we
ship. Training is here; evals.recipes.run_recipe adds the before/after evaluation. RLHF recipes
(SFT -> reward model -> PPO on an organism's base) are in harness.recipes.rlhf.

    harness recipe run gemma-3-270m-refusal-dpo      # LoRA-DPO on the shipped refusal pairs
    harness recipe run tiny-refusal-rlhf       # SFT, reward model, PPO
    from harness.recipes import train_recipe, refusal_pairs, train_rlhf
"""

from harness.recipes.lora_dpo import RECIPES, RecipeSpec, get_recipe, train_recipe
from harness.recipes.pairs import refusal_pairs
from harness.recipes.rlhf import RLHF_RECIPES, RLHFSpec, get_rlhf_recipe, train_rlhf

__all__ = ["RECIPES", "RecipeSpec", "get_recipe", "train_recipe", "refusal_pairs",
           "RLHF_RECIPES", "RLHFSpec", "get_rlhf_recipe", "train_rlhf"]
