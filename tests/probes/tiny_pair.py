"""A tiny base/aligned pair (tests/probes/tiny.py's model and a copy with one MLP scaled), the
same in every process: the subprocess tests rebuild it to resume a job the test started."""

from __future__ import annotations

import copy

import torch

from tests.probes import tiny

PROMPTS = ["what is the red apple?", "a dog and a cat", "is the fish on the blue horse?", "green pear with a lemon"]


def pair(n_layers: int = 3, d_model: int = 32):
    base = tiny.model(n_layers=n_layers, d_model=d_model)
    aligned = copy.deepcopy(base)
    aligned.identity = {"name": "tiny-aligned"}
    with torch.no_grad():
        aligned.blocks[1].mlp.down_proj.weight.mul_(1.5)
    return base, aligned
