"""Alignment recipes on real models: a base checkpoint, an adapter method and a preference set we
ship. Training is here; evals.recipes.run_recipe adds the before/after evaluation.

    harness recipe run gemma-3-270m-refusal-dpo      # LoRA-DPO on the shipped refusal pairs
    from harness.recipes import train_recipe, refusal_pairs
"""

from harness.recipes.lora_dpo import RECIPES, RecipeSpec, get_recipe, train_recipe
from harness.recipes.pairs import refusal_pairs

__all__ = ["RECIPES", "RecipeSpec", "get_recipe", "train_recipe", "refusal_pairs"]
