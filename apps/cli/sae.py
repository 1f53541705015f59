"""`harness sae`: train, evaluate and inspect sparse autoencoders (SAELens underneath).

    harness sae train --model smollm2-135m-instruct --hook blocks.9.hook_resid_post --arch topk \
        --d-sae 4608 --k 32 --tokens 1M --corpus stdlib-docs --out smollm-sae
    harness sae train --from-cache smollm-cache --hook blocks.9.hook_resid_post --arch topk \
        --d-sae 4608 --k 32 --tokens 1M --out smollm-sae --eval-model smollm2-135m-instruct
    harness sae eval --sae smollm-sae --model smollm2-135m-instruct --tokens 8k
    harness sae features --sae smollm-sae --model smollm2-135m-instruct --features 20

Results go into the SAE's run folder: sae/ (SAELens format), train_log.jsonl, eval.json,
features.json.

Defaults leave attention sinks and outliers out of training, evaluation and feature analysis: the
first position of each context (--skip-positions 1), special tokens (--keep-special-tokens to
keep them) and tokens whose norm is >= 10x the median (--norm-ratio 10; 0 turns it off; --max-norm
sets the threshold itself). Rerunning an interrupted `sae train` with the same arguments resumes it.
"""

from __future__ import annotations

from apps.cli.options import (
    add_run_name, add_runs, command_line, nonnegative_int, out_folder, positive_float,
    positive_int, token_count, token_count_or_zero,
)

ARCHS = ("standard", "gated", "topk", "abstopk", "jumprelu", "batchtopk", "matryoshka_batchtopk", "matching_pursuit")


def register(subparsers) -> None:
    p = subparsers.add_parser("sae", help="train and evaluate sparse autoencoders",
                              description="Train, evaluate and inspect sparse autoencoders (SAELens).")
    sub = p.add_subparsers(dest="sae_command", metavar="ACTION", required=True, parser_class=type(p))
    _register_train(sub)
    _register_eval(sub)
    _register_features(sub)


def _common(p, model_required: bool) -> None:
    p.add_argument("--model", required=model_required, help="zoo name, model folder, .gguf file or HF id")
    add_runs(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-dtype", default="float32", help="dtype to run the model in: float32, bfloat16, float16")
    p.add_argument("--context-length", type=positive_int, default=128)


def _register_train(sub) -> None:
    p = sub.add_parser("train", help="train an SAE on one hook", description="Train an SAE on one hook.")
    _common(p, model_required=False)
    p.add_argument("--hook", required=True, help="hook name, e.g. blocks.9.hook_resid_post")
    p.add_argument("--arch", default="topk", choices=ARCHS)
    p.add_argument("--d-sae", type=positive_int, required=True, help="number of features")
    p.add_argument("--k", type=positive_int, default=None,
                   help="active features per token: the top-k family's k, JumpReLU's target L0 (default 32), "
                        "matching pursuit's cap")
    p.add_argument("--sparsity", type=float, default=None, help="L1 (standard, gated) or L0-penalty (jumprelu) coefficient")
    p.add_argument("--tokens", type=token_count, required=True, help="training tokens (1M, 500k, 2e6 ok)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="train on the fly over this corpus: 'stdlib-docs', a file or folder, "
                                      "hf:OWNER/NAME")
    src.add_argument("--from-cache", metavar="CACHE", help="train from a `harness cache` run (name or folder)")
    where = p.add_mutually_exclusive_group()
    add_run_name(where, help="run name in the runs folder (as every command that writes a run takes)")
    where.add_argument("--out", metavar="RUN|DIR", help="the same as --name, or a folder path")
    p.add_argument("--batch-tokens", type=positive_int, default=4096)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr-warm-up-steps", type=nonnegative_int, default=0)
    p.add_argument("--skip-positions", type=nonnegative_int, default=1,
                   help="leave the first N positions of each context out (attention sinks; default 1)")
    p.add_argument("--keep-special-tokens", action="store_true",
                   help="train on BOS/EOS/PAD positions too (left out by default, as SAELens's exclude_special_tokens)")
    p.add_argument("--norm-ratio", type=positive_float, default=10.0,
                   help="leave out tokens whose activation norm is above this many times the median (default 10; "
                        "0: keep them)")
    p.add_argument("--max-norm", type=positive_float, default=None,
                   help="leave out activations with a larger L2 norm (an absolute threshold instead of --norm-ratio)")
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="steps between resumable checkpoints when training from a cache (default: a tenth)")
    p.add_argument("--autocast", action="store_true",
                   help="train the SAE under bfloat16 autocast (faster on CPUs with bf16)")
    p.add_argument("--log-every", type=positive_int, default=50, help="print loss, L0 and explained variance every N steps")
    p.add_argument("--eval-tokens", type=token_count_or_zero, default=0,
                   help="after training, evaluate on this many held-out tokens")
    p.add_argument("--eval-corpus", help="corpus for that evaluation (default: --corpus, or the cache's corpus)")
    p.add_argument("--eval-model", help="model for that evaluation when training from a cache (default --model)")
    p.set_defaults(func=cmd_train)


def _reading_an_sae(p, tokens: int) -> None:
    """What `sae eval` and `sae features` share: a model, an SAE, its hook and the text read."""
    _common(p, model_required=True)
    p.add_argument("--sae", required=True, help="SAE run (name or folder) or a SAELens SAE folder")
    p.add_argument("--hook", help="default: the hook recorded in the SAE")
    p.add_argument("--corpus", default="stdlib-docs")
    p.add_argument("--tokens", type=token_count, default=tokens)


def _register_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate an SAE on held-out text",
                       description="L0, explained variance, MSE, dead/dense fractions, CE loss recovered and KL.")
    _reading_an_sae(p, tokens=8192)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--all-positions", action="store_true",
                   help="evaluate on every position, sinks and outliers included (not what the SAE was trained for)")
    p.set_defaults(func=cmd_eval)


def _register_features(sub) -> None:
    p = sub.add_parser("features", help="top contexts, histograms and logit effects of SAE features",
                       description="Analyse SAE features and store them in the SAE's run for the dashboard.")
    _reading_an_sae(p, tokens=20_000)
    p.add_argument("--features", default="10", help="N (the N most active) or a comma-separated list of indices")
    p.add_argument("--top-k", type=positive_int, default=8, help="top contexts per feature")
    p.set_defaults(func=cmd_features)


def _load(args, name=None):
    import harness
    from harness.caching.writer import parse_dtype

    return harness.load(name or args.model, device=args.device, dtype=parse_dtype(args.model_dtype))


def _checked_name(name: str | None) -> str | None:
    from harness.runs import check_name

    return None if name is None else check_name(name)  # --name is a name, never a path


def cmd_train(args) -> int:
    from harness.errors import ConfigError
    from probes.sae import TrainSettings, evaluate_sae, train_sae

    if args.corpus and not args.model:
        raise ConfigError("--corpus trains on the fly and needs --model; or give --from-cache CACHE instead")
    if args.norm_ratio < 0:
        raise ConfigError(f"--norm-ratio must be 0 (off) or above 1, not {args.norm_ratio}")
    cache = out_folder(args.from_cache, args.runs) if args.from_cache else None
    if cache is not None:
        from harness.caching import CachedActivations

        cache = CachedActivations(cache)  # fail on a bad cache before anything slow
    model = _load(args) if args.model else None
    settings = TrainSettings(
        arch=args.arch, d_sae=args.d_sae, k=args.k, sparsity=args.sparsity, tokens=args.tokens,
        batch_tokens=args.batch_tokens, lr=args.lr, context_length=args.context_length, seed=args.seed,
        lr_warm_up_steps=args.lr_warm_up_steps, autocast=args.autocast, skip_positions=args.skip_positions,
        exclude_special=not args.keep_special_tokens, norm_ratio=args.norm_ratio or None, max_norm=args.max_norm,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every)
    result = train_sae(model, args.hook, settings, corpus=args.corpus, cache=cache,
                       out=args.out or _checked_name(args.name), runs=args.runs, command=command_line())
    print(f"SAE saved to {result.path}")
    for note in result.run.manifest.get("notes") or []:
        print(f"note: {note}")
    if args.eval_tokens:
        eval_model = model if model is not None and not args.eval_model else None
        if eval_model is None:
            if not (args.eval_model or args.model):
                raise ConfigError("--eval-tokens after training from a cache needs --eval-model (or --model)")
            eval_model = _load(args, args.eval_model)
        corpus = args.eval_corpus or args.corpus or _cache_corpus(cache)
        ev = evaluate_sae(result.sae, eval_model, args.hook, corpus=corpus, n_tokens=args.eval_tokens,
                          context_length=args.context_length, progress=True)
        ev.write(result.run)
        print(f"evaluated on {ev.metrics['n_tokens']:,} held-out tokens of {corpus}")
        _print_metrics(ev.metrics)
    return 0


def _cache_corpus(cache) -> str:
    """The corpus a cache was made from, when it is one `--corpus` can name again."""
    name = ((cache.job.get("corpus") or {}).get("name") if cache is not None else None) or "stdlib-docs"
    return name


def cmd_eval(args) -> int:
    from probes.sae import evaluate_sae, load_sae

    sae = load_sae(_sae_path(args))
    model = _load(args)
    override = dict(skip_positions=0, max_norm=0, exclude_special=False) if args.all_positions else {}
    ev = evaluate_sae(sae, model, args.hook, corpus=args.corpus, n_tokens=args.tokens,
                      context_length=args.context_length, batch_size=args.batch_size, progress=True, **override)
    ev.write(_sae_run(args, model), "eval_all_positions" if args.all_positions else "eval")
    _print_metrics(ev.metrics)
    return 0


def cmd_features(args) -> int:
    from probes.sae import analyze_features, load_sae

    sae = load_sae(_sae_path(args))
    model = _load(args)
    features = int(args.features) if args.features.isdigit() else [int(f) for f in args.features.split(",") if f]
    report = analyze_features(sae, model, args.hook, corpus=args.corpus, n_tokens=args.tokens,
                              context_length=args.context_length, features=features, top_k=args.top_k)
    report.write(_sae_run(args, model))
    for row in report.features:
        up = ", ".join(repr(t) for t, _ in row["logits"]["promoted"][:5])
        print(f"feature {row['feature']}: density {row['density']:.4f}  promotes {up}")
    return 0


def _sae_path(args):
    from pathlib import Path

    p = Path(args.sae).expanduser()
    return p if p.exists() else out_folder(args.sae, args.runs)


def _sae_run(args, model=None):
    """The SAE's run: the one it lives in, or, for a folder made elsewhere (SAELens's format), a
    run it is adopted into (probes.sae.adopt), so results are kept and the dashboard lists it."""
    from harness.runs import MANIFEST, RunStore
    from probes.sae.adopt import adopt_sae

    path = _sae_path(args)
    folder = path if (path / MANIFEST).exists() else path.parent
    if (folder / MANIFEST).exists():
        return RunStore(folder.parent).open(folder)
    run = adopt_sae(path, RunStore(args.runs), name=_checked_name(getattr(args, "name", None)),
                    command=command_line(), model=model)
    print(f"adopted the SAE into run {run.name} ({run.path})")
    return run


HEADLINE = ("explained_variance", "ce_loss_recovered", "kl_div", "l0", "mse")


def _print_metrics(metrics: dict) -> None:
    """The headline (EV always next to CE loss recovered and KL), the excluded positions apart,
    any warning, then every metric."""
    head = "  ".join(f"{k} {metrics[k]:.4g}" for k in HEADLINE if isinstance(metrics.get(k), float))
    print(f"on {metrics.get('n_tokens', 0):,} positions the SAE is for: {head}")
    n_out = metrics.get("excluded/n_tokens", 0)
    if n_out:
        why = ", ".join(f"{metrics.get('excluded/by_' + r, 0):,} by {r}" for r in ("position", "special", "norm"))
        figs = "  ".join(f"{k} {metrics['excluded/' + k]:.4g}" for k in ("explained_variance", "mse", "l0")
                         if isinstance(metrics.get("excluded/" + k), float))
        print(f"left out (kept clean when spliced): {n_out:,} positions ({why}); there: {figs}")
    for w in metrics.get("warnings") or []:
        print(f"WARNING: {w}")
    for key, value in metrics.items():
        if key == "warnings" or key.startswith("excluded/"):
            continue
        print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else f"{key:>22}: {value}")
