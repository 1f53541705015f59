"""CachedActivations: read a cache folder through memory maps and serve batches.

    cache = CachedActivations("runs/my-cache")
    cache.hooks, cache.n_contexts, cache.context_length
    x = cache.random_batch("blocks.0.hook_resid_post", 4096)        # [4096, d] random token rows
    for x in cache.batches("blocks.0.hook_resid_post", 4096, seed=0):  # one shuffled epoch
        ...
    provider = cache.stream("blocks.0.hook_resid_post", 4096)         # endless, for trainers
    ids = cache.token_ids(0)                                         # [shard contexts, L] of shard 0
    # leave out attention-sink / outlier positions (what SAE training does by default):
    for x in cache.batches(hook, 4096, skip_positions=1, exclude_tokens=(0,), max_norm=80.0, counts=counts):
        ...

A "row" is one token position for hooks whose second axis is the position (resid, mlp, q/k/v,
z, ...) and one context otherwise (attention patterns). Opening costs no reads; memory use is
the batches you take plus the OS page cache.

Exclusion (per-position hooks only): `skip_positions` leaves out the first positions of every
context, `exclude_tokens` the positions holding those token ids, `max_norm` the rows whose L2
norm exceeds it; `counts` (a dict) is increased by how many rows each rule left out
("position", "special", "norm") and how many were kept ("kept").
"""

from __future__ import annotations

import bisect
import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from harness.caching import manifest as mf
from harness.caching.outliers import exclusion_masks
from harness.caching.shards import map_shard, shard_name
from harness.errors import HookNameError, RunError


class CachedActivations:
    KIND, WHAT, COMMAND = mf.KIND, "an activation cache", "harness cache"

    def __init__(self, path, allow_incomplete: bool = False):
        self.path = Path(path)
        manifest = mf.read_manifest(self.path)
        if manifest is None or manifest.get("kind") != self.KIND:
            other = f"a {manifest.get('kind')} run" if manifest else "no cache manifest.json"
            raise RunError(f"{self.path} is not {self.WHAT} ({other}); run `{self.COMMAND}` first")
        if manifest.get("status") != "complete" and not allow_incomplete:
            raise RunError(f"cache {self.path} is unfinished (status {manifest.get('status')}); "
                           f"run the same `{self.COMMAND}` command again to finish it")
        self.manifest = manifest
        job = manifest["config"]
        self.job = job
        self.hooks: list[str] = job["hooks"]
        self.names: list[str] = self.tensor_names()
        self.context_length: int = job["context_length"]
        n_shards = -(-job["n_contexts"] // job["shard_contexts"])
        present = [s for s in range(n_shards) if (self.path / shard_name(s)).exists()]
        self._shards = [map_shard(self.path / shard_name(s)) for s in present]
        self._starts = np.cumsum([0] + [len(s["token_ids"]) for s in self._shards]).tolist()
        self.n_contexts = self._starts[-1]

    def tensor_names(self) -> list[str]:
        """The names activations are stored and read under (a paired cache prefixes the model)."""
        return list(self.hooks)

    def __repr__(self) -> str:
        return f"CachedActivations('{self.path}', hooks={self.hooks}, contexts={self.n_contexts}x{self.context_length})"

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    def shard(self, i: int) -> dict[str, torch.Tensor]:
        return self._shards[i]

    def token_ids(self, shard: int | None = None) -> torch.Tensor:
        """int32 token ids [contexts, L]: one shard's, or all of them (a copy)."""
        if shard is not None:
            return self._shards[shard]["token_ids"]
        return torch.cat([s["token_ids"] for s in self._shards])

    def activations(self, hook: str, shard: int) -> torch.Tensor:
        self._check(hook)
        return self._shards[shard][hook]

    def _check(self, hook: str) -> None:
        if hook not in self.names:
            import difflib

            near = difflib.get_close_matches(hook, self.names, n=3, cutoff=0.3)
            raise HookNameError(f"{hook!r} is not in this cache; cached hooks: {', '.join(near or self.names)}")

    def _rows(self, hook: str, shard: int) -> torch.Tensor:
        t = self.activations(hook, shard)
        if t.dim() >= 2 and t.shape[1] == self.context_length:
            return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])  # a view: still memory-mapped
        return t

    def kept_rows(self, hook: str, shard: int, *, skip_positions: int = 0, exclude_tokens=(),
                  max_norm: float | None = None, counts: dict | None = None) -> torch.Tensor:
        """The [rows, d] activations of one shard left after the exclusion rules (module docstring)."""
        t = self.activations(hook, shard)
        if not (skip_positions or len(exclude_tokens) or max_norm is not None):
            rows = self._rows(hook, shard)
            if counts is not None:
                counts["kept"] = counts.get("kept", 0) + len(rows)
            return rows
        if t.dim() != 3 or t.shape[1] != self.context_length:
            raise HookNameError(f"{hook!r} is not a per-position hook (shape {tuple(t.shape[1:])} per context); "
                                "positions cannot be excluded from it")
        masks = exclusion_masks(self.token_ids(shard), t, skip_positions, exclude_tokens, max_norm)
        if counts is not None:
            for key, m in masks.items():
                counts[key] = counts.get(key, 0) + int(m.sum())
        return t[masks["kept"]]

    def n_rows(self, hook: str) -> int:
        return sum(len(self._rows(hook, s)) for s in range(self.n_shards))

    def random_batch(self, hook: str, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`batch_size` rows drawn uniformly (with replacement) from the whole cache."""
        sizes = [len(self._rows(hook, s)) for s in range(self.n_shards)]
        starts = np.cumsum([0] + sizes).tolist()
        idx = torch.randint(starts[-1], (batch_size,), generator=generator).sort().values.tolist()
        parts = []
        for s in range(self.n_shards):
            lo, hi = bisect.bisect_left(idx, starts[s]), bisect.bisect_left(idx, starts[s + 1])
            if hi > lo:
                parts.append(self._rows(hook, s)[torch.tensor(idx[lo:hi]) - starts[s]])
        batch = torch.cat(parts)
        return batch[torch.randperm(len(batch), generator=generator)]

    def batches(self, hook: str, batch_size: int, seed: int = 0, shuffle: bool = True,
                shards_in_buffer: int = 2, drop_last: bool = True, **exclude) -> Iterator[torch.Tensor]:
        """One epoch of batches. Shuffled: shard order is permuted and rows are mixed within a
        window of `shards_in_buffer` shards, so memory is bounded by that window. `exclude`:
        skip_positions / exclude_tokens / max_norm / counts, as kept_rows takes them."""
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(self.n_shards, generator=g).tolist() if shuffle else list(range(self.n_shards))
        leftover = None
        for w in range(0, len(order), shards_in_buffer):
            window = [self.kept_rows(hook, s, **exclude) for s in order[w:w + shards_in_buffer]]
            rows = torch.cat(([leftover] if leftover is not None else []) + window)
            if shuffle:
                rows = rows[torch.randperm(len(rows), generator=g)]
            n_full = len(rows) // batch_size * batch_size
            for i in range(0, n_full, batch_size):
                yield rows[i:i + batch_size]
            leftover = rows[n_full:] if n_full < len(rows) else None
        if leftover is not None and not drop_last:
            yield leftover

    def stream(self, hook: str, batch_size: int, seed: int = 0, **exclude) -> Iterator[torch.Tensor]:
        """Endless shuffled batches, epoch after epoch (a new shuffle each): what a trainer such
        as SAELens's SAETrainer takes as its data provider. `exclude` as in batches."""
        for epoch in itertools.count():
            yield from self.batches(hook, batch_size, seed=seed + epoch, **exclude)

