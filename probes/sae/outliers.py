"""Which activations an SAE is meant for: sink- and outlier-aware exclusion.

Massive activations (the first position of every context, BOS/EOS-like special tokens, rare
tokens with a norm many times the median) dominate an SAE's loss and the variance explained
variance is computed over: an SAE that only reconstructs them scores EV near 1 and is useless
inside the model. So by default they are left out of training, evaluation and feature analysis,
by the rules of harness/caching/outliers.py (position: SAELens's `seqpos_slice`; special:
`exclude_special_tokens`; norm: `norm_ratio` x the median norm, fixed once as `max_norm`), which
the paired cache and crosscoder training share.

Everything is recorded in the SAE's cfg.json metadata (`seqpos_slice`, `exclude_special_tokens`,
`max_activation_norm`, plus `outlier_norm_ratio` and `median_activation_norm`), so evaluation
and feature analysis of a saved SAE apply the same rule; the run records the counts.

    ex = Exclusion(skip_positions=1, special_tokens=(0, 1), max_norm=120.0)
    masks = ex.masks(tokens, x)          # {"position", "special", "norm", "kept"}: [n, pos] bools
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from harness.caching.outliers import (DEFAULT_SKIP_POSITIONS, NORM_RATIO, REASONS, check_settings, count,
                                      exclusion_masks, norm_threshold, special_token_ids)

__all__ = ["DEFAULT_SKIP_POSITIONS", "NORM_RATIO", "REASONS", "Exclusion", "check_settings", "choose", "count",
           "special_token_ids"]


@dataclass
class Exclusion:
    skip_positions: int = 0
    special_tokens: tuple[int, ...] = ()
    max_norm: float | None = None
    norm_ratio: float | None = None  # how max_norm was chosen (None: given directly, or no norm rule)
    median_norm: float | None = None

    def masks(self, tokens: torch.Tensor | None, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Boolean [n, pos] masks of the positions each rule leaves out, and `kept` (none of them).
        A position counts under the first rule that excludes it (position, then special, then norm)."""
        return exclusion_masks(tokens, x, self.skip_positions, self.special_tokens, self.max_norm)

    def describe(self) -> dict:
        return {**dataclasses.asdict(self), "special_tokens": list(self.special_tokens)}

    @classmethod
    def none(cls) -> "Exclusion":
        return cls()

    @classmethod
    def of_sae(cls, sae) -> "Exclusion":
        """The exclusion a saved SAE was trained with, read from its cfg metadata."""
        meta = sae.cfg.metadata
        seqpos = getattr(meta, "seqpos_slice", None) or (None,)
        special = getattr(meta, "exclude_special_tokens", None)
        special = tuple(int(t) for t in special) if isinstance(special, (list, tuple)) else ()
        max_norm = getattr(meta, "max_activation_norm", None)
        return cls(skip_positions=int(seqpos[0] or 0), special_tokens=special,
                   max_norm=float(max_norm) if max_norm is not None else None,
                   norm_ratio=getattr(meta, "outlier_norm_ratio", None),
                   median_norm=getattr(meta, "median_activation_norm", None))

    def record(self, sae) -> None:
        """Write this exclusion into the SAE's cfg metadata (what of_sae reads back)."""
        meta = sae.cfg.metadata
        meta.seqpos_slice = (self.skip_positions, None) if self.skip_positions else (None,)
        meta.exclude_special_tokens = list(self.special_tokens) if self.special_tokens else False
        meta.max_activation_norm = self.max_norm
        meta.outlier_norm_ratio = self.norm_ratio
        meta.median_activation_norm = self.median_norm


def choose(x: torch.Tensor, tokens: torch.Tensor | None, *, skip_positions: int, special_tokens: tuple[int, ...],
           norm_ratio: float | None, max_norm: float | None) -> Exclusion:
    """The Exclusion for a sample of activations x [n, pos, d] (and their token ids [n, pos]):
    max_norm as given, else norm_ratio x the median norm of the positions the other rules keep."""
    check_settings(skip_positions, norm_ratio, max_norm)
    ex = Exclusion(skip_positions=skip_positions, special_tokens=tuple(special_tokens), max_norm=max_norm)
    if max_norm is None and norm_ratio is not None:
        kept = ex.masks(tokens, x)["kept"]
        ex.median_norm, ex.max_norm = norm_threshold(x.float().norm(dim=-1)[kept], norm_ratio)
        ex.norm_ratio = float(norm_ratio)
    return ex
