"""How a cache is made, as one object shared by the single-model and the paired cache (the CLI
builds it once; `cache_activations` and `cache_pair` read it). Keyword overrides go through
`CacheSettings.of`, so `cache_activations(model, hooks, corpus, n, out, batch_size=16)` reads as
before and a misspelt setting is one line naming the real ones."""

from __future__ import annotations

from dataclasses import dataclass

from harness.settings import with_overrides


@dataclass(frozen=True)
class CacheSettings:
    context_length: int = 128
    batch_size: int = 8
    dtype: str = "float32"  # what the shards store: float32, float16, bfloat16
    seed: int = 0  # the corpus shuffle
    prepend_bos: bool | None = None  # None: as the tokenizer does
    split: str = "train"  # train, heldout or all (harness.data.packing)
    heldout_fraction: float = 0.05
    shard_contexts: int | None = None  # None: as many as fit in shard_mb
    shard_mb: float = 256
    shuffle_buffer: int = 4096
    progress: bool = True

    @classmethod
    def of(cls, settings: "CacheSettings | None" = None, overrides: dict | None = None) -> "CacheSettings":
        return with_overrides(cls, settings, overrides, "cache")
