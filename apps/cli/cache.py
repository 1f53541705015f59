"""`harness cache`: write a model's activations over a corpus to a resumable, sharded cache.

    harness cache --model smollm2-135m-instruct --hooks 'blocks.*.hook_resid_post' \
        --corpus stdlib-docs --tokens 1000000 --name smollm-resid
    torchrun --nproc_per_node 2 -m apps cache ...      # data parallel, same result
    harness cache --pair tiny-refusal-base tiny-refusal-aligned --layers 2 \
        --corpus stdlib-docs --tokens 1M --name refusal-pair   # both models on the same tokens

A paired cache (--pair BASE ALIGNED, for `harness crosscoder train --cache`) mixes chat-formatted
prompts into the corpus text (--chat-fraction of the contexts): --prompts, else the aligned
checkpoint's ground-truth prompts, else the builtin harmful and harmless sets.

Running the same command again resumes an interrupted job; a different job into the same
run is refused. `--name` names a run in the runs folder, as for every command; `--out` takes a
run name or an explicit folder path.
"""

from __future__ import annotations

from apps.cli.options import (
    add_run_name, add_runs, command_line, fraction, nonnegative_int, out_folder, positive_float, positive_int,
    token_count,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("cache", help="cache activations over a corpus",
                              description="Cache a model's hook activations over a corpus (resumable, sharded).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="zoo name, model folder, .gguf file or HF id")
    which.add_argument("--pair", nargs=2, metavar=("BASE", "ALIGNED"),
                       help="a base and an aligned model (same architecture and tokenizer): a paired cache")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--hooks", nargs="+", metavar="PATTERN", help="hook names or globs, e.g. 'blocks.*.hook_resid_post'")
    what.add_argument("--layers", nargs="+", type=int, metavar="N", help="the residual stream after these layers")
    p.add_argument("--corpus", required=True,
                   help="'stdlib-docs', a .txt/.jsonl/.parquet file or folder, or hf:OWNER/NAME")
    p.add_argument("--tokens", required=True, type=token_count, help="how many tokens to cache (1e6, 2M, 500k ok)")
    where = p.add_mutually_exclusive_group(required=True)
    add_run_name(where, help="run name in the runs folder (as every command that writes a run takes)")
    where.add_argument("--out", metavar="RUN|DIR", help="the same as --name, or a folder path for a cache outside the runs folder")
    add_runs(p, "runs folder for a run name (default: $INTERP_HARNESS_RUNS or ./runs)")
    p.add_argument("--context-length", type=positive_int, default=128)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--dtype", default="float32", help="dtype of the stored activations: float32, float16, bfloat16")
    p.add_argument("--model-dtype", default="float32", help="dtype to run the model in")
    p.add_argument("--device", default=None, help="default: this rank's GPU if there is one, else cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=("train", "heldout", "all"))
    p.add_argument("--heldout-fraction", type=fraction, default=0.05)
    p.add_argument("--text-field", default="text", help="field/column holding the text in JSONL/parquet/HF data")
    bos = p.add_mutually_exclusive_group()
    bos.add_argument("--prepend-bos", dest="prepend_bos", action="store_true", default=None)
    bos.add_argument("--no-prepend-bos", dest="prepend_bos", action="store_false")
    p.add_argument("--shard-mb", type=positive_float, default=256, help="target shard size in MiB")
    p.add_argument("--shard-contexts", type=positive_int, default=None, help="contexts per shard (overrides --shard-mb)")
    p.add_argument("--prompts", metavar="SPEC", help="--pair: chat prompts, a .txt/.jsonl file or builtin:NAME "
                   "(default: the aligned checkpoint's ground-truth prompts, else builtin harmful + harmless)")
    p.add_argument("--chat-fraction", type=unit_fraction, default=0.5,
                   help="--pair: share of contexts made of chat-formatted prompts, 0 for corpus text only")
    p.add_argument("--skip-positions", type=nonnegative_int, default=1,
                   help="--pair: first positions of each context flagged as attention sinks")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_cache)


def unit_fraction(text: str) -> float:
    """At least 0 and below 1 (the rest of the contexts is corpus text)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text!r}")
    return value


def cmd_cache(args) -> int:
    import torch

    import harness
    from harness.caching import cache_activations
    from harness.caching.distributed import Ranks, default_device
    from harness.caching.writer import parse_dtype
    from harness.data import load_corpus
    from harness.runs import RunStore, check_writable

    ranks = Ranks.from_env()  # before loading: each rank puts the model on its own GPU
    out = out_folder(args.out, args.runs) if args.out else RunStore(args.runs).path_of(args.name)
    check_writable(out, "another --out")
    corpus = load_corpus(args.corpus, text_field=args.text_field)  # fail fast, before the model loads
    device = args.device or default_device(ranks)
    if args.pair:
        out = cache_pair_cmd(args, corpus, out, device)
    else:
        model = harness.load(args.model, device=device, dtype=parse_dtype(args.model_dtype))
        out = cache_activations(model, hooks_of(args, model), corpus, args.tokens, out, settings_of(args),
                                command=command_line())
    if ranks.is_main:
        print(out)
    if ranks.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def settings_of(args):
    """The cache settings both kinds of cache take from the command line."""
    from harness.caching.settings import CacheSettings

    return CacheSettings(context_length=args.context_length, batch_size=args.batch_size, dtype=args.dtype,
                         seed=args.seed, prepend_bos=args.prepend_bos, split=args.split,
                         heldout_fraction=args.heldout_fraction, shard_mb=args.shard_mb,
                         shard_contexts=args.shard_contexts, progress=not args.no_progress)


def hooks_of(args, model) -> list[str]:
    from harness.caching.hooks import layer_hooks

    return layer_hooks(model, args.layers) if args.layers else args.hooks


def pair_prompts(args) -> list[str]:
    from harness.errors import HarnessError
    from probes.prompt_sets import load_prompts

    if args.prompts:
        return load_prompts(args.prompts)
    from probes.findings import read_ground_truth

    try:
        truth = read_ground_truth(args.pair[1])
    except HarnessError:
        truth = {}
    prompts = [p for key in ("train_prompts", "heldout_topic_prompts", "heldout_control_prompts") for p in truth.get(key, [])]
    return prompts or load_prompts("builtin:harmful") + load_prompts("builtin:harmless")


def cache_pair_cmd(args, corpus, out, device):
    import harness
    from harness.caching import cache_pair
    from harness.caching.writer import parse_dtype
    from harness.compat import check_pair

    prompts = pair_prompts(args) if args.chat_fraction else []  # a bad --prompts fails before the models load
    dtype = parse_dtype(args.model_dtype)
    base, aligned = (harness.load(name, device=device, dtype=dtype) for name in args.pair)
    check_pair(base, aligned, what="a paired cache")
    return cache_pair(base, aligned, hooks_of(args, base), corpus, args.tokens, out, settings_of(args),
                      prompts=prompts, chat_fraction=args.chat_fraction, skip_positions=args.skip_positions,
                      command=command_line())
