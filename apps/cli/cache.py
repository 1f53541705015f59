"""`harness cache`: write a model's activations over a corpus to a resumable, sharded cache.

    harness cache --model smollm2-135m-instruct --hooks 'blocks.*.hook_resid_post' \
        --corpus stdlib-docs --tokens 1000000 --name smollm-resid
    torchrun --nproc_per_node 2 -m apps cache ...      # data parallel, same result

Running the same command again resumes an interrupted job; a different job into the same
run is refused. `--name` names a run in the runs folder, as for every command; `--out` takes a
run name or an explicit folder path.
"""

from __future__ import annotations

from apps.cli.options import (
    add_run_name, add_runs, command_line, fraction, out_folder, positive_float, positive_int,
    token_count,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("cache", help="cache activations over a corpus",
                              description="Cache a model's hook activations over a corpus (resumable, sharded).")
    p.add_argument("--model", required=True, help="zoo name, model folder, .gguf file or HF id")
    p.add_argument("--hooks", required=True, nargs="+", metavar="PATTERN",
                   help="hook names or globs, e.g. 'blocks.*.hook_resid_post'")
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
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_cache)


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
    model = harness.load(args.model, device=device, dtype=parse_dtype(args.model_dtype))
    out = cache_activations(
        model, args.hooks, corpus, args.tokens, out,
        context_length=args.context_length, batch_size=args.batch_size, dtype=args.dtype, seed=args.seed,
        prepend_bos=args.prepend_bos, split=args.split, heldout_fraction=args.heldout_fraction,
        shard_mb=args.shard_mb, shard_contexts=args.shard_contexts, progress=not args.no_progress,
        command=command_line())
    if ranks.is_main:
        print(out)
    if ranks.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
