"""Tiny models and prompts shared by the circuit tests."""

import torch

import harness
from tests.harness import hf_tiny, hf_tiny_layers, hf_tiny_moe

DENSE = list(hf_tiny.CONFIGS)
MOE = "mixtral-7experts-top3"
LAYER_KINDS = ["olmo2-gqa", "gpt-oss-sinks-alternating"]  # post-norms only; sinks with MoE
ALL = DENSE + [MOE] + LAYER_KINDS


def load(name: str):
    for module in (hf_tiny, hf_tiny_moe, hf_tiny_layers):
        if name in module.CONFIGS:
            return harness.load(module.build(name)).eval()
    raise KeyError(name)


def pair(model, batch: int = 2, length: int = 6, seed: int = 0):
    """Clean and corrupted random tokens differing at two positions, and answer pairs."""
    gen = torch.Generator().manual_seed(seed)
    v = model.cfg.d_vocab
    clean = torch.randint(0, v, (batch, length), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 1 + torch.randint(0, v - 1, (batch,), generator=gen)) % v
    corrupted[:, -2] = (clean[:, -2] + 1) % v
    answers = torch.randint(0, v, (batch, 2), generator=gen)
    return clean, corrupted, answers
