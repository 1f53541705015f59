"""Alignment recipes on real models: a base checkpoint, an adapter method, a preference set we
ship, and the before/after evaluation that says what the training changed.

    harness recipe run gemma-3-270m-refusal-dpo      # LoRA-DPO on the shipped refusal pairs
    from harness.recipes import run_recipe, refusal_pairs
"""

from harness.recipes.lora_dpo import RECIPES, RecipeSpec, get_recipe, run_recipe
from harness.recipes.pairs import refusal_pairs

__all__ = ["RECIPES", "RecipeSpec", "get_recipe", "run_recipe", "refusal_pairs"]
