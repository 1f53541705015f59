"""cache_activations: run a hooked model over a corpus and write the chosen hooks' activations.

Layout of the output folder (see shards.py, manifest.py):
    manifest.json               the job and, when done, the shard list and throughput
    shard_00000.safetensors     contexts [0, S): one tensor per hook + token_ids (int32)
    shard_00001.safetensors     contexts [S, 2S) ...

The shard layout is a pure function of the job (context stream, shard size, batch size), so
resuming gives the same bytes as an uninterrupted run and torchrun ranks the same files as one
process (the loop itself is job.py's, shared with the paired cache).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path

import torch

from harness.caching import manifest as mf
from harness.caching.distributed import Ranks
from harness.caching.hooks import resolve_hooks, stop_layer
from harness.caching.job import run_sharded_job
from harness.caching.settings import CacheSettings
from harness.data.corpus import CorpusError, load_corpus
from harness.data.packing import pack, prefetch, resolve_prepend_bos
from harness.devices import device_of
from harness.errors import HarnessError

FORMAT = 1
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).removeprefix("torch.")
    if key not in DTYPES:
        raise HarnessError(f"unknown cache dtype {dtype!r}; use float32, float16 or bfloat16")
    return DTYPES[key]


def tokenizer_identity(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return {"class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
            "sha256": hashlib.sha256(spec.encode("utf-8")).hexdigest()}


def _n_layers(model) -> int | None:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "n_layers", None)


@torch.inference_mode()
def _forward(model, tokens: torch.Tensor, hooks: list[str], stop: int | None, batch_size: int,
             dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The hooks' activations for `tokens` [n, L], computed batch by batch into preallocated CPU tensors."""
    device = device_of(model)
    out: dict[str, torch.Tensor] = {}
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i:i + batch_size].to(device=device, dtype=torch.long)
        _, cache = model.run_with_cache(batch, names_filter=hooks, stop_at_layer=stop)
        for name in hooks:
            act = cache[name].to(dtype)  # cast on the device: less to copy back
            if name not in out:
                out[name] = torch.empty((len(tokens), *act.shape[1:]), dtype=dtype)
            out[name][i:i + len(batch)].copy_(act)
    return out


def _auto_shard_contexts(model, hooks, first, stop, dtype, batch_size, shard_mb) -> int:
    acts = _forward(model, torch.from_numpy(first[None]), hooks, stop, 1, dtype)
    per_context = sum(a.numel() * a.element_size() for a in acts.values()) + first.nbytes
    fit = int(shard_mb * 2**20) // max(per_context, 1)
    return max(batch_size, fit // batch_size * batch_size)


def job_inputs(model, hooks, settings, overrides: dict) -> tuple[CacheSettings, list[str], object]:
    """What every cache job starts from: its settings, the hook names (checked against the model)
    and the tokenizer the corpus is packed with."""
    names = resolve_hooks(model, hooks)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise HarnessError("the model has no tokenizer; load it with one (tokenizer=...) to cache a text corpus")
    return CacheSettings.of(settings, overrides), names, tokenizer


def cache_activations(model, hooks, corpus, n_tokens: int, out_dir, settings: CacheSettings | None = None, *,
                      command: str | None = None, **overrides) -> Path:
    """Cache the activations of `hooks` (names or globs) over the first n_tokens of `corpus`
    (rounded up to whole contexts) into `out_dir`; resumes a matching unfinished job there.
    `settings` (CacheSettings) says how; keyword `overrides` replace its fields. Returns the
    folder. Read it back with CachedActivations(out_dir)."""
    ranks = Ranks.from_env()
    out = Path(out_dir)
    s, names, tokenizer = job_inputs(model, hooks, settings, overrides)
    context_length, batch_size, seed, split = s.context_length, s.batch_size, s.seed, s.split
    corpus = load_corpus(corpus)
    dtype = parse_dtype(s.dtype)
    if n_tokens < 1 or batch_size < 1:
        raise HarnessError(f"tokens ({n_tokens}) and batch size ({batch_size}) must be positive")
    n_contexts = math.ceil(n_tokens / context_length)
    bos = resolve_prepend_bos(tokenizer, s.prepend_bos)
    # The shuffle buffer is filled before the first context comes out: never fill more than the job needs.
    shuffle_buffer = min(s.shuffle_buffer, n_contexts)
    contexts = pack(corpus, tokenizer, context_length, prepend_bos=bos, split=split,
                    heldout_fraction=s.heldout_fraction, seed=seed, shuffle_buffer=shuffle_buffer)
    first = next(contexts, None)
    if first is None:
        raise CorpusError(f"corpus {corpus.name!r} ({split} split) yields not one context of {context_length} tokens")
    contexts = prefetch(itertools.chain([first], contexts), depth=max(256, 2 * batch_size))
    stop = stop_layer(names, _n_layers(model))
    shard_contexts = s.shard_contexts
    if shard_contexts is None:
        shard_contexts = _auto_shard_contexts(model, names, first, stop, dtype, batch_size, s.shard_mb)
    if shard_contexts % batch_size:
        raise HarnessError(f"shard_contexts ({shard_contexts}) must be a multiple of batch_size ({batch_size})")
    job = {"format": FORMAT, "model": mf.model_identity(model), "tokenizer": tokenizer_identity(tokenizer),
           "hooks": names, "dtype": str(dtype).removeprefix("torch."), "context_length": context_length,
           "n_contexts": n_contexts, "n_tokens": n_contexts * context_length, "batch_size": batch_size,
           "shard_contexts": shard_contexts, "corpus": {"name": corpus.name, **corpus.fingerprint},
           "split": split, "heldout_fraction": s.heldout_fraction, "prepend_bos": bos, "seed": seed,
           "shuffle_buffer": shuffle_buffer,
           "stop_at_layer": stop}

    ran_out = lambda have: CorpusError(  # noqa: E731
        f"corpus {corpus.name!r} ({split} split) gives only {have} contexts of {context_length} tokens; "
        f"ask for at most {have * context_length} tokens (and delete this --out folder or use a new one)")
    compute = lambda tokens, first: _forward(model, tokens, names, stop, batch_size, dtype)  # noqa: E731
    return run_sharded_job(out, mf.KIND, job, {job["model"]["name"]: job["model"]}, contexts, compute,
                           command=command, progress=s.progress and ranks.is_main, ran_out=ran_out)
