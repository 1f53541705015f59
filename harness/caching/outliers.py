"""Which activation rows to leave out of dictionary training: attention sinks and outliers.

Many models park "massive activations" on a few positions: the first position of every context
(an attention sink, whatever its token), BOS/EOS-like special tokens, and now and then other
tokens whose residual norm is tens to thousands of times the typical one. Left in, they dominate
a dictionary's loss and the variance that explained variance is computed over. The rules:

- position:  the first `skip_positions` positions of each context (default 1);
- special:   the tokenizer's structural special tokens, BOS, EOS, PAD, ... (SAELens's
             `exclude_special_tokens`, the ids from `sae_lens.util.get_special_token_ids`);
- norm:      rows whose activation L2 norm exceeds `norm_ratio` x the median norm of the rows
             the other rules keep (default NORM_RATIO = 10), measured once on a sample and then
             fixed as an absolute threshold, `max_norm`.

A position counts under the first rule that excludes it. The SAE code (probes/sae/outliers.py)
and the paired cache / crosscoder share these rules. The paired cache stores the first two as
per-position bit flags (FLAG_POSITION, FLAG_SPECIAL) next to the activations, plus FLAG_CHAT
for positions of chat-formatted contexts, so a reader can apply or ignore them cheaply.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError

NORM_RATIO = 10.0  # a token is an outlier when its norm is >= this many times the median norm
DEFAULT_SKIP_POSITIONS = 1
REASONS = ("position", "special", "norm")
FLAG_POSITION, FLAG_SPECIAL, FLAG_CHAT = 1, 2, 4


def special_token_ids(tokenizer) -> tuple[int, ...]:
    """The structural special tokens SAELens excludes (BOS, EOS, PAD, SEP, ...)."""
    if tokenizer is None:
        return ()
    from sae_lens.util import get_special_token_ids

    return tuple(sorted(int(t) for t in get_special_token_ids(tokenizer)))


def check_settings(skip_positions: int, norm_ratio: float | None, max_norm: float | None) -> None:
    if skip_positions < 0:
        raise ConfigError(f"skip_positions must be >= 0, not {skip_positions}")
    if norm_ratio is not None and not norm_ratio > 1:
        raise ConfigError(f"the outlier norm ratio must be above 1 (it multiplies the median norm), not {norm_ratio}")
    if max_norm is not None and not max_norm > 0:
        raise ConfigError(f"max_norm must be positive, not {max_norm}")


def exclusion_masks(tokens: torch.Tensor | None, x: torch.Tensor, skip_positions: int = 0, exclude_tokens=(),
                    max_norm: float | None = None) -> dict[str, torch.Tensor]:
    """Boolean [n, pos] masks for activations x [n, pos, d] (token ids [n, pos]): the positions
    each rule leaves out ("position", "special", "norm") and those kept ("kept")."""
    shape, device = x.shape[:-1], x.device
    position = torch.zeros(shape, dtype=torch.bool, device=device)
    position[..., :skip_positions] = True
    special = torch.zeros(shape, dtype=torch.bool, device=device)
    if len(exclude_tokens) and tokens is not None:
        ids = torch.as_tensor(list(exclude_tokens), device=tokens.device, dtype=tokens.dtype)
        special = torch.isin(tokens, ids).to(device) & ~position
    norm = torch.zeros(shape, dtype=torch.bool, device=device)
    if max_norm is not None:
        norm = (x.float().norm(dim=-1) > max_norm) & ~position & ~special
    return {"position": position, "special": special, "norm": norm, "kept": ~(position | special | norm)}


def norm_threshold(norms: torch.Tensor, norm_ratio: float) -> tuple[float, float]:
    """(median, max_norm = norm_ratio x median) of the norms of the rows the other rules keep."""
    if norms.numel() == 0:
        raise ConfigError("every sampled position is excluded (position / special-token rules); "
                          "use fewer --skip-positions")
    median = float(norms.float().median())
    return median, float(norm_ratio) * median


def count(masks: dict[str, torch.Tensor], into: dict | None = None) -> dict:
    """Add the positions each rule left out (and those kept) to a running count."""
    into = into if into is not None else {}
    for key in (*REASONS, "kept"):
        into[key] = into.get(key, 0) + int(masks[key].sum())
    return into


def position_flags(tokens: torch.Tensor, skip_positions: int, special_tokens, chat: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 flags [n, pos] for token ids [n, pos]: FLAG_POSITION on the first skip_positions
    positions, FLAG_SPECIAL on special tokens, FLAG_CHAT on every position of the contexts
    `chat` ([n] bools) marks as chat-formatted."""
    flags = torch.zeros(tokens.shape, dtype=torch.uint8)
    flags[:, :skip_positions] |= FLAG_POSITION
    if len(special_tokens):
        ids = torch.as_tensor(list(special_tokens), dtype=tokens.dtype)
        flags[torch.isin(tokens, ids)] |= FLAG_SPECIAL
    if chat is not None:
        flags[chat.bool()] |= FLAG_CHAT
    return flags
