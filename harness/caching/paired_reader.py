"""PairedActivations: read a paired cache (paired.py) through memory maps.

    pair = PairedActivations("runs/pair")
    pair.activations("aligned/blocks.2.hook_resid_post", 0)    # [contexts, L, d] of shard 0
    pair.batches("base/blocks.2.hook_resid_post", 4096)       # one model's rows, as CachedActivations
    ex = pair.exclusion()                                     # sinks, special tokens, norm outliers
    x = pair.pair_rows(0, keep=ex.masks(pair, 0)["kept"])     # [rows, 2 models, layers, d]
    pair.exclusion_counts(ex)                                 # what each rule leaves out, whole cache

The exclusion rules are harness/caching/outliers.py's: the position and special-token rules read
the cache's flags, the norm rule its stored row norms (a row is an outlier when its norm in any
model at any hook exceeds norm_ratio x that model's and hook's median), so deciding costs no
reads of the activations themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from harness.caching import manifest as mf
from harness.caching.outliers import FLAG_POSITION, FLAG_SPECIAL, NORM_RATIO, check_settings, norm_threshold
from harness.caching.paired import ROLES
from harness.caching.reader import CachedActivations

SAMPLE_ROWS = 2**18  # rows whose norms set the median: enough for a stable median, few enough to read fast


@dataclass
class PairExclusion:
    position: bool = True  # leave out the flagged first positions (attention sinks)
    special: bool = True  # leave out the flagged special tokens (BOS, EOS, PAD, ...)
    norm_ratio: float | None = NORM_RATIO
    hooks: list = field(default_factory=list)
    median_norm: dict = field(default_factory=dict)  # "role/hook" -> median row norm of the sample
    max_norm: dict = field(default_factory=dict)  # "role/hook" -> norm_ratio x median
    skip_positions: int = 0  # as the cache flagged them
    special_tokens: list = field(default_factory=list)

    def flag_mask(self) -> int:
        return (FLAG_POSITION if self.position else 0) | (FLAG_SPECIAL if self.special else 0)

    def masks(self, pair: "PairedActivations", shard: int) -> dict[str, torch.Tensor]:
        """[contexts, L] bools per rule ("position", "special", "norm") and "kept"; a position
        counts under the first rule that excludes it."""
        flags = pair.flags(shard)
        position = (flags & FLAG_POSITION).bool() if self.position else torch.zeros(flags.shape, dtype=torch.bool)
        special = (flags & FLAG_SPECIAL).bool() & ~position if self.special else torch.zeros_like(position)
        norm = torch.zeros_like(position)
        for name, limit in self.max_norm.items():
            role, hook = name.split("/", 1)
            norm |= pair.norms(role, hook, shard) > limit
        norm &= ~(position | special)
        return {"position": position, "special": special, "norm": norm, "kept": ~(position | special | norm)}

    def describe(self) -> dict:
        why = {}
        if self.position and self.skip_positions:
            n = self.skip_positions
            why["position"] = f"first {'position' if n == 1 else f'{n} positions'} of each context (attention sink)"
        if self.special and self.special_tokens:
            why["special"] = f"special tokens {self.special_tokens} (BOS/EOS/PAD)"
        if self.norm_ratio is not None:
            why["norm"] = f"norm > {self.norm_ratio:g} x its median in either model (massive activation)"
        return {**asdict(self), "why": why}


class PairedActivations(CachedActivations):
    KIND, WHAT, COMMAND = mf.PAIRED_KIND, "a paired activation cache", "harness cache pair"

    def tensor_names(self) -> list[str]:
        return [f"{role}/{h}" for role in ROLES for h in self.hooks]

    def __repr__(self) -> str:
        return f"PairedActivations('{self.path}', hooks={self.hooks}, contexts={self.n_contexts}x{self.context_length})"

    @property
    def d_in(self) -> int:
        return int(self.activations(self.names[0], 0).shape[-1])

    def flags(self, shard: int) -> torch.Tensor:
        return self.shard(shard)["flags"]

    def norms(self, role: str, hook: str, shard: int) -> torch.Tensor:
        self._check(f"{role}/{hook}")
        return self.shard(shard)[f"norm/{role}/{hook}"]

    def pair_rows(self, shard: int, hooks=None, keep: torch.Tensor | None = None) -> torch.Tensor:
        """[rows, models, layers, d] for the positions of shard `shard` where keep ([contexts, L]) is
        True (all positions without it): a copy, in the cache dtype."""
        hooks = list(hooks or self.hooks)
        parts = []
        for role in ROLES:
            per_hook = [self.activations(f"{role}/{h}", shard) for h in hooks]
            parts.append(torch.stack([a[keep] if keep is not None else a.flatten(0, 1) for a in per_hook], 1))
        return torch.stack(parts, 1)

    def exclusion(self, *, position: bool = True, special: bool = True, norm_ratio: float | None = NORM_RATIO,
                  hooks=None, sample_rows: int = SAMPLE_ROWS) -> PairExclusion:
        """The rule for these hooks: flags as chosen, and norm thresholds measured on the first
        `sample_rows` rows (in shard order) that the flag rules keep."""
        check_settings(0, norm_ratio, None)
        hooks = list(hooks or self.hooks)
        for h in hooks:
            self._check(f"{ROLES[0]}/{h}")
        flags = self.job.get("flags", {})
        ex = PairExclusion(position=position, special=special, norm_ratio=norm_ratio, hooks=hooks,
                           skip_positions=int(flags.get("skip_positions", 0)),
                           special_tokens=list(flags.get("special_tokens", [])))
        if norm_ratio is None:
            return ex
        sample: dict[str, list[torch.Tensor]] = {f"{r}/{h}": [] for r in ROLES for h in hooks}
        taken = 0
        for s in range(self.n_shards):
            keep = (self.flags(s) & ex.flag_mask()) == 0
            for name in sample:
                role, hook = name.split("/", 1)
                sample[name].append(self.norms(role, hook, s)[keep])
            taken += int(keep.sum())
            if taken >= sample_rows:
                break
        for name, parts in sample.items():
            ex.median_norm[name], ex.max_norm[name] = norm_threshold(torch.cat(parts)[:sample_rows], norm_ratio)
        return ex

    def exclusion_counts(self, ex: PairExclusion) -> dict:
        """Positions each rule leaves out of the whole cache, and those kept (flags and norms only)."""
        counts = {"position": 0, "special": 0, "norm": 0, "kept": 0}
        for s in range(self.n_shards):
            for key, m in ex.masks(self, s).items():
                counts[key] += int(m.sum())
        return counts
