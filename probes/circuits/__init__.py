"""Circuit analysis on hooked models: logit lens and direct logit attribution, activation,
attribution and path patching, ablations, head detectors, generated prompt sets and figures.

Every tool takes a HookedLM, token ids (or text) and, where there is one, a metric
logits [batch, pos, d_vocab] -> scalar. See docs in each module.
"""

from probes.circuits.ablation import ablate, ablation_hooks, ablation_sweep
from probes.circuits.attribution import attribute_experts, attribute_heads, attribute_layer_pos
from probes.circuits.core import answer_prob, correlation, logit_diff, normalized, scalar
from probes.circuits.heads import attention_patterns, head_scores, top_heads
from probes.circuits.lens import direct_logit_attribution, logit_lens, logit_lens_diff, top_tokens
from probes.circuits.path_patching import path_patch, path_patch_sweep
from probes.circuits.patching import (
    patch_attn_out,
    patch_experts,
    patch_heads_all_pos,
    patch_heads_by_pos,
    patch_layer_pos,
    patch_mlp_out,
    patch_resid_pre,
)
from probes.circuits.prompts import PromptSet, factual_recall, greater_than, greater_than_metric, ioi, repeated_tokens

__all__ = [
    "PromptSet", "ablate", "ablation_hooks", "ablation_sweep", "answer_prob", "attention_patterns",
    "attribute_experts", "attribute_heads", "attribute_layer_pos", "correlation", "direct_logit_attribution",
    "factual_recall", "greater_than", "greater_than_metric", "head_scores", "ioi", "logit_diff", "logit_lens",
    "logit_lens_diff", "normalized", "patch_attn_out", "patch_experts", "patch_heads_all_pos", "patch_heads_by_pos",
    "patch_layer_pos", "patch_mlp_out", "patch_resid_pre", "path_patch", "path_patch_sweep", "repeated_tokens",
    "scalar", "top_heads", "top_tokens",
]
