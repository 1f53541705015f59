"""Head detectors: how much each head attends where a previous-token, duplicate-token or
induction head would, on repeated random tokens ([BOS] r r).

    scores = head_scores(model)                     # {"induction": [n_layers, n_heads], ...}
    top_heads(scores["induction"], k=5)             # [(layer, head, score), ...]

A score is the mean attention weight on the expected source position (1.0 = all of it). Layers
whose mixer has no heads get NaN patterns and scores, and top_heads passes over them.
"""

from __future__ import annotations

import torch

from probes.circuits.core import as_tokens, warn_headless
from probes.circuits.prompts import repeated_tokens

KINDS = ("previous_token", "duplicate_token", "induction")


@torch.no_grad()
def attention_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """[n_layers, batch, n_heads, q, k] attention patterns (NaN on layers without heads)."""
    tokens = as_tokens(model, tokens)
    layers = warn_headless(model, "attention_patterns")
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in layers]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    first = cache[names[0]]
    out = torch.full((model.cfg.n_layers, *first.shape), float("nan"), device=first.device)
    out[layers] = torch.stack([cache[n].float() for n in names])
    return out


def _score(patterns: torch.Tensor, queries: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean attention from each query position q to q - offset -> [n_layers, n_heads]."""
    weights = patterns[..., queries, queries - offset]  # [layers, batch, heads, len(queries)]
    return weights.mean(dim=(1, 3))


def head_scores(model, tokens: torch.Tensor | None = None, length: int | None = None,
                n: int = 8, seq_len: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    """Previous-token, duplicate-token and induction scores of every head -> {kind: [n_layers, n_heads]}.
    tokens: a sequence repeated twice after `len - 2 * length` prefix tokens (default: generated,
    n sequences of seq_len random tokens after a BOS)."""
    if tokens is None:
        prompts = repeated_tokens(model, n=n, length=seq_len, seed=seed)
        tokens, length = prompts.clean, prompts.extra["length"]
    tokens = as_tokens(model, tokens)
    length = length or tokens.shape[1] // 2
    start = tokens.shape[1] - length  # first position of the second copy
    patterns = attention_patterns(model, tokens)
    second = torch.arange(start, tokens.shape[1])
    return {
        "previous_token": _score(patterns, torch.arange(1, tokens.shape[1]), 1),
        "duplicate_token": _score(patterns, second, length),
        "induction": _score(patterns, second, length - 1),
    }


def top_heads(scores: torch.Tensor, k: int = 5) -> list[tuple[int, int, float]]:
    """The k highest-scoring heads as (layer, head, score), best first."""
    flat = scores.flatten()
    flat = torch.where(flat.isnan(), torch.full_like(flat, float("-inf")), flat)  # topk ranks NaN first
    k = min(k, int((flat > float("-inf")).sum()))
    values, idx = flat.topk(k)
    n_heads = scores.shape[-1]
    return [(int(i) // n_heads, int(i) % n_heads, float(v)) for v, i in zip(values, idx)]
