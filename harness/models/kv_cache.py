"""The generation state a forward carries between calls: one state per layer, made by that layer's
token mixer, and the 0/1 mask of every position seen so far. Its own module, so the sampler
(generate.py), the lm-eval adapter and the model (transformer.py) share it without importing
each other.

Every layer state speaks one small protocol (`LayerState`):
- `update(*new)`: take this call's part and return what the mixer computes with (attention: the
  keys and values of every position so far; a recurrent mixer: its new state, stored);
- `select_rows(index)`: keep batch rows `index`, in that order (one cache row per continuation,
  dropping finished rows);
- `reorder(beam_idx)`: the same, under the name beam search uses.
A mixer says which state it keeps with `new_state(capacity)`; the cache asks for it on the
layer's first call, so a cache is made knowing only the number of layers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch


class LayerState(ABC):
    """What one layer keeps between generation steps."""

    @abstractmethod
    def update(self, *new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Add this call's part; return what the layer computes with."""

    @abstractmethod
    def select_rows(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (a 1-D tensor of row numbers, repeats allowed), in that order."""

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Beam search's reorder: row i becomes the old row beam_idx[i]."""
        self.select_rows(beam_idx)


def _take(x: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if x is None else x.index_select(0, index.to(x.device))


class KVState(LayerState):
    """An attention layer's keys and values [batch, kv_heads, pos, d_head], preallocated to
    `capacity` positions and filled in place."""

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new_len = self.length + k.shape[2]
        if self.k is None or self.k.shape[2] < new_len:
            size = max(self.capacity, new_len)
            grow_k = k.new_empty(k.shape[0], k.shape[1], size, k.shape[3])
            grow_v = v.new_empty(v.shape[0], v.shape[1], size, v.shape[3])
            if self.k is not None:
                grow_k[:, :, : self.length] = self.k[:, :, : self.length]
                grow_v[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = grow_k, grow_v
        self.k[:, :, self.length : new_len] = k
        self.v[:, :, self.length : new_len] = v
        self.length = new_len
        return self.k[:, :, :new_len], self.v[:, :, :new_len]

    def select_rows(self, index: torch.Tensor) -> None:
        self.k, self.v = _take(self.k, index), _take(self.v, index)


class RecurrentState(LayerState):
    """A recurrent mixer's state: a window of its last inputs for a short causal convolution
    [batch, channels, width] and its recurrent memory [batch, ...]. Each call replaces both
    (for gated DeltaNet the memory is [batch, heads, d_key, d_value]). Both start as None."""

    def __init__(self, capacity: int = 0) -> None:
        self.conv: torch.Tensor | None = None
        self.recurrent: torch.Tensor | None = None

    def update(self, conv: torch.Tensor, recurrent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.conv, self.recurrent = conv, recurrent
        return conv, recurrent

    def select_rows(self, index: torch.Tensor) -> None:
        self.conv, self.recurrent = _take(self.conv, index), _take(self.recurrent, index)


class KVCache:
    """Every layer's generation state, plus the attention mask of what has been seen so far.
    (The name is kept from when every layer cached keys and values.)"""

    def __init__(self, n_layers: int, capacity: int = 0):
        self.layers: list[LayerState | None] = [None] * n_layers
        self.capacity = capacity
        self.attention_mask: torch.Tensor | None = None  # [batch, seen] of 0/1
        self.length = 0  # positions seen; the model advances it after each forward

    def state(self, layer: int, make: Callable[[int], LayerState]) -> LayerState:
        """Layer `layer`'s state, made by `make(capacity)` on its first call."""
        if self.layers[layer] is None:
            self.layers[layer] = make(self.capacity)
        return self.layers[layer]

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` in every layer and in the mask (see LayerState.select_rows)."""
        index = torch.as_tensor(index, dtype=torch.long)
        for layer in self.layers:
            if layer is not None:
                layer.select_rows(index)
        self.attention_mask = _take(self.attention_mask, index)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.select_rows(beam_idx)
