"""Model-diffing throughput, each against its reference measured in the same process:

(a) crosscoder training steps/s from a paired cache (CachedPairSource) vs computing both models
    on the fly (ModelPairSource, the CLI's defaults: 64 contexts per block, 8 steps per block);
(b) paired caching tok/s (harness.caching.cache_pair: both models, norms, flags, shards written)
    vs two plain forwards of the same models on the same tokens (stopping at the same layer).
    Target >= 0.9.

Usage: python -m benchmarks.diffing [--base tiny-refusal-base --aligned tiny-refusal-aligned]
           [--layer 2] [--tokens 65536] [--context-length 128] [--batch-size 8] [--steps 64]
           [--d-latent 1024] [--train-batch 256] [--repeats 8] [--train-repeats 3] [--threads 1]
    python -m benchmarks.diffing --base smollm2-135m-instruct --aligned smollm2-135m-instruct ...
(the same checkpoint twice is a fair pair for throughput: both forwards still run.)
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def caching(base, aligned, hook, args, scratch: Path) -> dict:
    """(b): alternating runs of a fresh paired cache and of the two plain forwards on its tokens."""
    from benchmarks.timing import paired_ratio
    from harness.caching import PairedActivations, cache_pair
    from harness.caching.hooks import stop_layer

    job = dict(context_length=args.context_length, batch_size=args.batch_size, progress=False, seed=0,
               shard_contexts=max(args.batch_size, (args.shard_contexts // args.batch_size) * args.batch_size))

    runs = itertools.count()

    def ours():
        out = scratch / f"cache-{next(runs)}"
        cache_pair(base, aligned, [hook], "stdlib-docs", args.tokens, out, **job)
        return out

    first = ours()
    tokens = PairedActivations(first).token_ids().long()
    stop = stop_layer([hook], base.cfg.n_layers)

    def reference():
        with torch.inference_mode():
            for model in (base, aligned):
                for i in range(0, len(tokens), args.batch_size):
                    model(tokens[i:i + args.batch_size], stop_at_layer=stop)

    r = paired_ratio(ours, reference, repeats=args.repeats, warmup=1)  # each cache is a new folder: nothing resumed
    n = tokens.numel()
    return {"tokens": n, "cache_tok_s": n / r["ours_s"], "forward_tok_s": n / r["reference_s"],
            "ratio": 1 / r["ratio"], "ci": (1 / r["ci_high"], 1 / r["ci_low"]), "cache_folder": first}


def training(base, aligned, hook, cache_folder: Path, args) -> dict:
    """(a): the same crosscoder trained for --steps from the cache and on the fly."""
    from harness.caching import PairedActivations
    from probes.crosscoder import Crosscoder, CrosscoderConfig, TrainConfig
    from probes.crosscoder.cached import CachedPairSource
    from probes.crosscoder.data import ModelPairSource
    from probes.crosscoder.train import train_crosscoder

    cache = PairedActivations(cache_folder)
    tokens = cache.token_ids().long()
    cfg = CrosscoderConfig(d_in=base.cfg.d_model, d_latent=args.d_latent, loss="batchtopk", k=32, hooks=(hook,))
    tcfg = TrainConfig(steps=args.steps, batch_size=args.train_batch, show_progress=False, normalize=True)
    sources = {"from cache": lambda: CachedPairSource(cache, [hook], batch_size=args.train_batch),
               "on the fly": lambda: ModelPairSource(base, aligned, [hook], tokens)}
    times = {k: [] for k in sources}
    for r in range(args.train_repeats):
        for name, make in list(sources.items())[:: 1 if r % 2 == 0 else -1]:
            source = make()  # fresh: no block is already in memory
            t = time.perf_counter()
            train_crosscoder(Crosscoder(cfg), source, tcfg)
            times[name].append(time.perf_counter() - t)
    best = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"cache_steps_s": args.steps / best["from cache"], "fly_steps_s": args.steps / best["on the fly"],
            "ratio": best["on the fly"] / best["from cache"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="tiny-refusal-base")
    ap.add_argument("--aligned", default="tiny-refusal-aligned")
    ap.add_argument("--layer", type=int, default=None, help="residual stream after this layer (default: the middle)")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--context-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shard-contexts", type=int, default=64)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--d-latent", type=int, default=1024)
    ap.add_argument("--train-batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--train-repeats", type=int, default=3, help="alternating training runs of each source (median)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import harness

    base, aligned = harness.load(args.base), harness.load(args.aligned)
    layer = base.cfg.n_layers // 2 if args.layer is None else args.layer
    hook = f"blocks.{layer}.hook_resid_post"
    scratch = Path(tempfile.mkdtemp(prefix="diffing-bench-"))
    try:
        c = caching(base, aligned, hook, args, scratch)
        print(f"pair {args.base} / {args.aligned}, {hook}, d_model {base.cfg.d_model}, threads={args.threads}")
        print(f"(b) paired caching: {c['cache_tok_s']:9.0f} tok/s   two plain forwards: {c['forward_tok_s']:9.0f} tok/s   "
              f"ratio {c['ratio']:.3f} (95% CI {c['ci'][0]:.3f}-{c['ci'][1]:.3f}; target >= 0.9)  "
              f"[{c['tokens']} tokens, ctx {args.context_length}, batch {args.batch_size}, {args.repeats} alternating pairs]")
        if not args.skip_training:
            t = training(base, aligned, hook, c["cache_folder"], args)
            print(f"(a) crosscoder training: from cache {t['cache_steps_s']:7.2f} steps/s   on the fly "
                  f"{t['fly_steps_s']:7.2f} steps/s   ratio {t['ratio']:.2f}x  [{args.steps} steps, batch "
                  f"{args.train_batch} rows, {args.d_latent} latents, BatchTopK k=32, median of {args.train_repeats}]")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
