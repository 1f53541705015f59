"""Crosscoder rows from a paired activation cache (harness.caching.cache_pair), with the
contract of data.py's ModelPairSource: `batch(step, batch_size)` -> [batch, models, layers,
d_in], the same rows for the same step, so training from it resumes to identical weights.

    source = CachedPairSource("runs/pair", batch_size=256)      # every cached hook, sinks left out
    train_crosscoder(cc, source, tcfg, folder=...)

Block b is `shards_per_block` shards, a fixed slice of a seeded permutation of the shards (a new
one each epoch); a step's rows are a seeded draw from its block's kept rows. Memory holds one
block, whatever the cache size. By default the rows the sink/outlier rules flag are left out
(harness/caching/outliers.py: the first position, special tokens, norms above 10 x the median in
either model); `describe()` records the rule and its thresholds, `report()` what it left out.
"""

from __future__ import annotations

import hashlib

import torch

from harness.caching.outliers import NORM_RATIO
from harness.runs import dumps
from probes.crosscoder.config import CrosscoderError


class CachedPairSource:
    def __init__(self, cache, hooks=None, *, position: bool = True, special: bool = True,
                 norm_ratio: float | None = NORM_RATIO, shards_per_block: int = 1, steps_per_block: int | None = None,
                 batch_size: int = 256, seed: int = 0):
        from harness.caching import PairedActivations

        self.cache = cache if isinstance(cache, PairedActivations) else PairedActivations(cache)
        cached = self.cache.hooks
        self.hooks = list(hooks or cached)
        missing = [h for h in self.hooks if h not in cached]
        if missing:
            raise CrosscoderError(f"{missing[0]!r} is not in the paired cache {self.cache.path}; it holds {', '.join(cached)}")
        if shards_per_block < 1 or batch_size < 1:
            raise CrosscoderError(f"shards per block ({shards_per_block}) and batch size ({batch_size}) must be at least 1")
        self.exclusion = self.cache.exclusion(position=position, special=special, norm_ratio=norm_ratio, hooks=self.hooks)
        self.shards_per_block = min(shards_per_block, self.cache.n_shards)
        rows = self.cache.job["shard_contexts"] * self.cache.context_length * self.shards_per_block
        self.steps_per_block = steps_per_block or max(1, rows // batch_size)  # each row drawn about once per block
        self.seed = seed
        self.n_models, self.n_layers, self.d_in = 2, len(self.hooks), self.cache.d_in
        self.models = tuple(self.cache.job["models"][r].get("name") or r for r in ("base", "aligned"))
        self._block: tuple[int, torch.Tensor] | None = None

    def describe(self) -> dict:
        job = self.cache.job
        digest = hashlib.sha256(dumps(job, indent=None).encode("utf-8")).hexdigest()[:16]
        return {"source": "paired_cache", "cache": {"name": self.cache.manifest.get("name"), "job_sha256": digest,
                                                    "n_tokens": job["n_tokens"]},
                "hooks": self.hooks, "models": list(self.models), "exclusion": self.exclusion.describe(),
                "shards_per_block": self.shards_per_block, "steps_per_block": self.steps_per_block, "seed": self.seed}

    def report(self) -> dict:
        """What the exclusion leaves out of the whole cache and why (for the run's record)."""
        counts = self.cache.exclusion_counts(self.exclusion)
        total = sum(counts.values())
        return {"left_out": {k: counts[k] for k in ("position", "special", "norm")}, "kept": counts["kept"],
                "positions": total, "why": self.exclusion.describe()["why"],
                "max_norm": self.exclusion.max_norm}

    def _shards_of(self, block: int) -> list[int]:
        n = self.cache.n_shards
        per_epoch = -(-n // self.shards_per_block)
        epoch, slot = divmod(block, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch)).tolist()
        return perm[slot * self.shards_per_block:(slot + 1) * self.shards_per_block]

    def rows(self, shards) -> torch.Tensor:
        """[rows, models, layers, d] kept by the exclusion in these shards."""
        parts = [self.cache.pair_rows(s, self.hooks, self.exclusion.masks(self.cache, s)["kept"]) for s in shards]
        out = torch.cat(parts)
        if len(out) == 0:
            raise CrosscoderError(f"the exclusion rules leave no rows in shards {list(shards)} of {self.cache.path}; "
                                  "cache longer contexts or relax the rules")
        return out

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        block = max(step, 0) // self.steps_per_block
        if self._block is None or self._block[0] != block:
            self._block = None  # drop the old block before reading the next: one in memory
            self._block = (block, self.rows(self._shards_of(block)))
        rows = self._block[1]
        g = torch.Generator().manual_seed(self.seed * 104729 + step + 2)
        return rows[torch.randint(len(rows), (batch_size,), generator=g)]

