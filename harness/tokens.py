"""Token batches shared by training, generation and evaluation: the pad id a tokenizer implies,
and left padding, which puts every row's last token in the last column (where a reply starts
and where generation continues)."""

from __future__ import annotations

from typing import Sequence

import torch


def pad_id(tokenizer) -> int:
    """The tokenizer's pad token, else its end token, else 0 (masked out either way)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [n, width], attention mask [n, width] of 0/1), each row right-aligned."""
    width = max(map(len, rows))
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, row in enumerate(rows):
        tokens[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row):] = 1
    return tokens, mask
