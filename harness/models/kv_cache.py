"""The generation state a forward carries between calls: every layer's keys and values, and the
attention mask of what has been seen so far. Its own module, so the sampler (generate.py) and
the model (transformer.py) both use it without importing each other."""

from __future__ import annotations

import torch

from harness.models.components import LayerKV


class KVCache:
    """Keys and values of every layer plus the attention mask of what has been seen so far."""

    def __init__(self, n_layers: int, capacity: int = 0):
        self.layers = [LayerKV() for _ in range(n_layers)]
        self.capacity = capacity
        self.attention_mask: torch.Tensor | None = None  # [batch, seen] of 0/1

    @property
    def length(self) -> int:
        return self.layers[0].length
