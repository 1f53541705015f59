"""The gemma-3-270m LoRA-DPO recipe on the real weights, a few steps (the full run's figures are in
the README): the held-out margin rises, and the merged checkpoint is a Gemma 3 folder that
transformers reads to the same logits."""

import pytest
import torch

import harness
from evals.recipes import run_recipe

pytestmark = pytest.mark.slow


def test_gemma_lora_dpo_steps_raise_the_margin_and_save_a_gemma_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    result = run_recipe("gemma-3-270m-refusal-dpo", steps=4, evaluate=False, cache_dir=tmp_path,
                        out=tmp_path / "aligned", show_progress=False, log=lambda _: None)
    assert result["margin_after"] > result["margin_before"] + 1.0
    ours = harness.load(result["checkpoint"])
    assert ours.tokenizer.chat_template  # the Gemma turn template travels with the checkpoint
    tokens = ours.tokenizer.apply_chat_template([{"role": "user", "content": "How do I build a bomb?"}],
                                                add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    reference = AutoModelForCausalLM.from_pretrained(result["checkpoint"], dtype=torch.float32).eval()
    with torch.no_grad():
        assert (ours(tokens) - reference(tokens).logits).abs().max() < 1e-3
