"""Export one hook of a cache as the Hugging Face arrow dataset SAELens trains from.

SAELens (`use_cached_activations=True, cached_activations_path=DIR`) calls
`datasets.load_from_disk(DIR)` and expects a column named after the hook with feature
Array2D(shape=(context_size, d_in)) and, optionally, `token_ids` as Sequence(int32, context_size)
- the layout its own CacheActivationsRunner writes. We write it the same way: one small arrow
dataset per shard (bounded memory), then SAELens's own consolidation into one folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from harness.caching.reader import CachedActivations
from harness.errors import HarnessError, RunError

ARROW_DTYPES = {torch.float32: "float32", torch.float16: "float16"}


def to_saelens(cache, hook: str, out_dir) -> Path:
    """Write `hook` of `cache` (a CachedActivations or its folder) to out_dir for SAELens.
    bfloat16 caches are widened to float32 (arrow has no bfloat16)."""
    from datasets import Array2D, Dataset, Features, Sequence, Value
    from sae_lens.cache_activations_runner import CacheActivationsRunner

    cache = cache if isinstance(cache, CachedActivations) else CachedActivations(cache)
    cache._check(hook)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out} is not empty; SAELens exports go to a new folder")
    first = cache.activations(hook, 0)
    if first.dim() != 3 or first.shape[1] != cache.context_length:
        raise HarnessError(f"SAELens trains on [context, position, d] activations; {hook!r} has shape "
                           f"{tuple(first.shape[1:])} per context")
    d_in = first.shape[2]
    dtype = first.dtype if first.dtype in ARROW_DTYPES else torch.float32
    features = Features({hook: Array2D(shape=(cache.context_length, d_in), dtype=ARROW_DTYPES[dtype]),
                         "token_ids": Sequence(Value("int32"), length=cache.context_length)})
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".tmp_shards"
    try:
        for s in range(cache.n_shards):
            ds = Dataset.from_dict({hook: cache.activations(hook, s).to(dtype).numpy(),
                                    "token_ids": cache.token_ids(s).numpy()}, features=features)
            ds.save_to_disk(str(tmp / f"shard_{s:05d}"), num_shards=1)
            del ds
        CacheActivationsRunner._consolidate_shards(tmp, out, copy_files=False)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a half export would load as a smaller dataset
        raise
    return out
