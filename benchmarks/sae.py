"""SAE training speed: from a harness activation cache vs SAELens generating activations on the
fly (its LanguageModelSAETrainingRunner driving the model), with the same SAE, batch and settings.

Prints steady-state training steps/s of each and their ratio (target: cache / on-the-fly >= 2).
Steps are timed from the per-step progress log after `--warmup` steps, so model loading, buffer
filling and SAELens setup are not counted on either side.

Usage: python benchmarks/sae.py [--model smollm2-135m-instruct] [--hook blocks.9.hook_resid_post]
           [--cache runs/sae-smollm2-l9-cache] [--d-sae 2304] [--k 32] [--batch-tokens 2048]
           [--steps 8] [--warmup 2] [--threads 2]
Without --cache (or when it does not exist) a small cache is written to a temporary folder first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402


def steady_rate(history: list[dict], warmup: int) -> float:
    """Steps per second between the end of step `warmup` and the last step."""
    start = next(r for r in history if r["step"] == warmup)
    end = history[-1]
    return (end["step"] - start["step"]) / (end["seconds"] - start["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--hook", default="blocks.9.hook_resid_post")
    parser.add_argument("--cache", default="runs/sae-smollm2-l9-cache")
    parser.add_argument("--model-dtype", default="bfloat16",
                        help="dtype the model runs in on the fly (and for a new cache)")
    parser.add_argument("--d-sae", type=int, default=2304)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import harness
    from harness.caching import CachedActivations, cache_activations
    from harness.caching.writer import parse_dtype
    from probes.sae import train_sae

    dtype = parse_dtype(args.model_dtype)
    model = harness.load(args.model, dtype=dtype)
    scratch = Path(tempfile.mkdtemp(prefix="sae-bench-"))
    cache = Path(args.cache)
    if not (cache / "manifest.json").exists():
        print(f"no cache at {cache}: caching {args.steps + 2} batches of {args.hook} first")
        cache = cache_activations(model, [args.hook], "stdlib-docs", (args.steps + 2) * args.batch_tokens,
                                  scratch / "cache", context_length=args.context_length, dtype=dtype, progress=False)
    cache = CachedActivations(cache)

    common = dict(arch="topk", d_sae=args.d_sae, k=args.k, tokens=args.steps * args.batch_tokens,
                  batch_tokens=args.batch_tokens, normalize="none", lr=1e-3, log_every=1, progress=False)
    rates = {}
    cached = train_sae(None, args.hook, cache=cache, out=scratch / "from-cache", **common)
    rates["cache"] = steady_rate(cached.history, args.warmup)
    fly = train_sae(model, args.hook, corpus="stdlib-docs", context_length=cache.context_length,
                    out=scratch / "on-the-fly", **common)
    rates["fly"] = steady_rate(fly.history, args.warmup)

    print(f"SAE training, topk d_in={cached.sae.cfg.d_in} d_sae={args.d_sae} k={args.k}, "
          f"batch {args.batch_tokens} tokens, {args.steps} steps ({args.warmup} warm-up), "
          f"torch threads {args.threads}, model {args.model} ({args.model_dtype}), hook {args.hook}")
    for key, label in (("cache", "from harness cache       "), ("fly", "SAELens runner on the fly")):
        print(f"  {label}: {rates[key]:.3f} steps/s  ({rates[key] * args.batch_tokens:,.0f} tokens/s)")
    print(f"  ratio cache / on-the-fly  : {rates['cache'] / rates['fly']:.2f}x  (target >= 2)")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
