"""Which activations an SAE is meant for: sink- and outlier-aware exclusion.

Many models park "massive activations" on a few positions: the first position of every context
(an attention sink, whatever its token), BOS/EOS-like special tokens, and now and then other
tokens whose residual norm is tens to thousands of times the typical one. Left in, they dominate
an SAE's training loss and the variance that explained variance is computed over: an SAE that
only reconstructs them scores EV near 1 and is useless inside the model. So by default they are
left out of training, evaluation and feature analysis:

- position:  the first `skip_positions` positions of each context (default 1; SAELens's
             `seqpos_slice`);
- special:   the tokenizer's structural special tokens, BOS, EOS, PAD, ... (SAELens's
             `exclude_special_tokens`, the ids from `sae_lens.util.get_special_token_ids`);
- norm:      tokens whose activation L2 norm exceeds `norm_ratio` x the median norm of the
             remaining positions (default NORM_RATIO = 10), measured once on a sample before
             training and then fixed as an absolute threshold, `max_norm`.

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

from harness.errors import ConfigError

NORM_RATIO = 10.0  # a token is an outlier when its norm is >= this many times the median norm
DEFAULT_SKIP_POSITIONS = 1
REASONS = ("position", "special", "norm")


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
        from harness.caching.reader import exclusion_masks

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


def choose(x: torch.Tensor, tokens: torch.Tensor | None, *, skip_positions: int, special_tokens: tuple[int, ...],
           norm_ratio: float | None, max_norm: float | None) -> Exclusion:
    """The Exclusion for a sample of activations x [n, pos, d] (and their token ids [n, pos]):
    max_norm as given, else norm_ratio x the median norm of the positions the other rules keep."""
    check_settings(skip_positions, norm_ratio, max_norm)
    ex = Exclusion(skip_positions=skip_positions, special_tokens=tuple(special_tokens), max_norm=max_norm)
    if max_norm is None and norm_ratio is not None:
        kept = ex.masks(tokens, x)["kept"]
        norms = x.float().norm(dim=-1)[kept]
        if norms.numel() == 0:
            raise ConfigError("every sampled position is excluded (position / special-token rules); "
                              "use fewer --skip-positions")
        median = float(norms.median())
        ex.median_norm, ex.norm_ratio, ex.max_norm = median, float(norm_ratio), float(norm_ratio) * median
    return ex


def count(masks: dict[str, torch.Tensor], into: dict | None = None) -> dict:
    """Add the positions each rule left out (and those kept) to a running count."""
    into = into if into is not None else {}
    for key in (*REASONS, "kept"):
        into[key] = into.get(key, 0) + int(masks[key].sum())
    return into
