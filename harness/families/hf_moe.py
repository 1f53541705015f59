"""What the mixture-of-experts families share: the expert and router weight layouts.

transformers 5 keeps experts in memory as stacked 3-D tensors (`experts.gate_up_proj`
[experts, 2 * hidden, d_model], `experts.down_proj` [experts, d_model, hidden]), which is our
layout too, but saves them one expert at a time (`experts.{e}.gate_proj` ..., or Mixtral's
`block_sparse_moe.experts.{e}.w1/w3/w2`); those are stacked back here.
"""

from __future__ import annotations

import re

import torch

from harness.errors import CheckpointError

_L = r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)"
MOE_RULES = [
    (_L + r"\.gate\.weight", r"blocks.\1.mlp.router.weight"),
    (_L + r"\.gate\.e_score_correction_bias", r"blocks.\1.mlp.router.bias"),
    (_L + r"\.experts\.(gate_up_proj|down_proj)", r"blocks.\1.mlp.experts.\2"),
    (_L + r"\.experts\.(\d+)\.(?:w1|gate_proj)\.weight", r"blocks.\1.mlp.experts.\2.gate"),
    (_L + r"\.experts\.(\d+)\.(?:w3|up_proj)\.weight", r"blocks.\1.mlp.experts.\2.up"),
    (_L + r"\.experts\.(\d+)\.(?:w2|down_proj)\.weight", r"blocks.\1.mlp.experts.\2.down"),
    (_L + r"\.shared_experts\.(gate|up|down)_proj\.weight", r"blocks.\1.mlp.shared_experts.\2_proj.weight"),
]

_ONE = re.compile(r"(blocks\.\d+\.mlp\.experts)\.(\d+)\.(gate|up|down)")


def stack_experts(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack experts saved one by one (keys already renamed by MOE_RULES) into gate_up_proj / down_proj."""
    out, parts = {}, {}
    for key, value in weights.items():
        one = _ONE.fullmatch(key)
        if one:
            prefix, expert, kind = one.groups()
            parts.setdefault(prefix, {}).setdefault(kind, {})[int(expert)] = value
        else:
            out[key] = value
    for prefix, kinds in parts.items():
        experts = sorted(kinds.get("gate", {}))
        if any(sorted(kinds.get(k, {})) != experts for k in ("up", "down")) or experts != list(range(len(experts))):
            raise CheckpointError(f"{prefix}: experts {experts} lack some of their gate/up/down weights")
        gate, up, down = (kinds[k] for k in ("gate", "up", "down"))
        out[f"{prefix}.gate_up_proj"] = torch.stack([torch.cat((gate[e], up[e])) for e in experts])
        out[f"{prefix}.down_proj"] = torch.stack([down[e] for e in experts])
    return out
