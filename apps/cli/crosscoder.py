"""`harness crosscoder train|eval|latents`: a crosscoder over base and aligned activations.

    harness crosscoder train --base tiny-refusal-base --aligned tiny-refusal-aligned --layers 2 --loss batchtopk
    harness crosscoder train --cache refusal-pair --steps 5000      # from `harness cache --pair` (faster)
    harness crosscoder eval RUN_OR_FOLDER --base B --aligned A        # FVU, L0, dead, spliced CE/KL
    harness crosscoder latents RUN_OR_FOLDER --base B --aligned A     # relative norms, Latent Scaling, findings

Texts default to a mix: the aligned checkpoint's ground-truth prompts (chat-formatted) when it
records any, plus unrelated stdlib-docs text. Training is resumable: rerun the same command with
the same --state folder and it continues from the last saved step.

Training leaves out attention sinks by default (the first position of each context; from a
paired cache also the special tokens and rows whose norm is above --norm-ratio x the median),
and the run records what was left out and why (exclusion.json, and a note in its manifest).
"""

from __future__ import annotations

from apps.cli.options import add_run_name, add_runs, command_line, out_folder, positive_float


def _common(p, models_required: bool = True) -> None:
    p.add_argument("--base", required=models_required, help="the base model: zoo name, folder, .gguf or HF id")
    p.add_argument("--aligned", required=models_required, help="the aligned model (same architecture and tokenizer)")
    p.add_argument("--prompts", help=".txt/.jsonl prompt file (default: ground-truth prompts + stdlib-docs text)")
    p.add_argument("--n-texts", type=int, default=64, help="unrelated stdlib-docs texts mixed in")
    p.add_argument("--context", type=int, default=64, help="tokens per context")
    p.add_argument("--device", default="cpu")
    add_runs(p)
    add_run_name(p, help="run name (default: kind and time)")


def register(subparsers) -> None:
    p = subparsers.add_parser("crosscoder", help="train, evaluate and read a base/aligned crosscoder",
                              description="Crosscoders (L1 or BatchTopK) over one or more layers of two models.")
    sub = p.add_subparsers(dest="crosscoder_command", metavar="ACTION", required=True, parser_class=type(p))
    t = sub.add_parser("train", help="train a crosscoder (resumable)")
    _common(t, models_required=False)
    t.add_argument("--cache", metavar="RUN|DIR", help="train from a paired cache (`harness cache --pair`) "
                   "instead of running --base and --aligned")
    t.add_argument("--layers", type=int, nargs="+", default=None,
                   help="layers read (default: the middle one; from --cache, every cached layer)")
    t.add_argument("--keep-sinks", action="store_true",
                   help="train on the first position of each context and on special tokens too")
    t.add_argument("--norm-ratio", type=positive_float, default=10.0,
                   help="--cache: leave out rows whose norm is above this many times the median")
    t.add_argument("--keep-outliers", action="store_true", help="--cache: no norm rule")
    t.add_argument("--d-latent", type=int, default=None, help="latents (default: 8 x d_model)")
    t.add_argument("--loss", choices=("batchtopk", "l1"), default="batchtopk")
    t.add_argument("--k", type=int, default=16, help="BatchTopK: active latents per row")
    t.add_argument("--l1-coeff", type=float, default=1.0)
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--state", help="folder for resumable training state (default: inside the run)")
    t.add_argument("--fresh", action="store_true", help="ignore saved state in --state and start over")
    t.set_defaults(func=cmd_train)
    for action, func, text in (("eval", cmd_eval, "FVU, L0, dead fraction and spliced CE/KL per model"),
                               ("latents", cmd_latents, "relative norms, Latent Scaling and findings.json")):
        e = sub.add_parser(action, help=text)
        e.add_argument("crosscoder", help="a crosscoder folder or a crosscoder run (name or path)")
        _common(e)
        e.set_defaults(func=func)


def load_pair(args):
    import harness
    from probes.compat import check_pair

    base = harness.load(args.base, device=args.device)
    aligned = harness.load(args.aligned, device=args.device)
    check_pair(base, aligned, what="a crosscoder")  # before any work or run folder
    return base, aligned


def texts_for(args, model) -> list[str]:
    from harness.errors import HarnessError
    from probes.activations import format_prompts
    from probes.adl import unrelated_texts

    if args.prompts:
        from probes.prompt_sets import load_prompts

        prompts = load_prompts(args.prompts)
    else:
        from probes.findings import read_ground_truth

        try:
            truth = read_ground_truth(args.aligned)
            prompts = truth.get("heldout_topic_prompts", []) + truth.get("heldout_control_prompts", []) + truth.get("train_prompts", [])
        except HarnessError:
            prompts = []
    chat = format_prompts(model, prompts, chat="auto") if prompts else []
    return chat + unrelated_texts(args.n_texts)


def cmd_train(args) -> int:
    from pathlib import Path

    from harness.errors import HarnessError
    from harness.runs import RunStore
    from probes.crosscoder import Crosscoder, CrosscoderConfig, TrainConfig
    from probes.crosscoder.evaluate import evaluate
    from probes.crosscoder.train import train_crosscoder

    if args.cache and (args.base or args.aligned):
        raise HarnessError("give --cache (a paired cache) or --base and --aligned (activations on the fly), not both")
    if not args.cache and not (args.base and args.aligned):
        raise HarnessError("give --base and --aligned (activations on the fly), or --cache (a paired cache)")
    store = RunStore(args.runs)
    if args.name:
        store.check_available(args.name)
    source, models, names = cached_source(args) if args.cache else model_source(args)
    hooks = source.hooks
    cfg = CrosscoderConfig(d_in=source.d_in, d_latent=args.d_latent or 8 * source.d_in, n_layers=len(hooks),
                           loss=args.loss, k=args.k, l1_coeff=args.l1_coeff, hooks=tuple(hooks), seed=args.seed,
                           models=names)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    with store.create("crosscoder", name=args.name, command=command_line(), config=config, seed=args.seed) as run:
        for role, model in models.items():
            run.add_model(role, model)
        left_out = exclusion_record(args, source)
        run.write_json("exclusion.json", left_out)
        run.add_note(left_out["note"])
        state = Path(args.state) if args.state else run.path / "training"
        cc = Crosscoder(cfg)
        with run.timer("train"):
            result = train_crosscoder(cc, source, TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr),
                                      folder=state, resume=not args.fresh)
        from probes.crosscoder.io import save_crosscoder

        save_crosscoder(cc, run.path / "crosscoder", extra={"source": source.describe()})
        metrics = evaluate(cc, [source.batch(10**6 + i, 1024) for i in range(2)])
        run.write_jsonl("history.jsonl", result["history"])
        run.write_json("metrics.json", metrics)
    print(f"crosscoder over {hooks} ({cfg.loss}, {cfg.d_latent} latents), {args.steps} steps"
          + (f", resumed from step {result['resumed_from']}" if result["resumed_from"] else ""))
    print(f"explained variance: {metrics['explained_variance']}; L0 {metrics['l0']:.1f}; dead {metrics['dead_fraction']:.1%}")
    print(left_out["note"])
    print(f"run {run.path}")
    return 0


def model_source(args):
    """Both models run on the fly over the texts (first position of each context left out)."""
    from probes.crosscoder.data import ModelPairSource, contexts_from_texts, hooks_for

    base, aligned = load_pair(args)
    layers = args.layers if args.layers is not None else [base.cfg.n_layers // 2]
    hooks = hooks_for(base, layers)
    tokens, mask = contexts_from_texts(base, texts_for(args, base), args.context)
    source = ModelPairSource(base, aligned, hooks, tokens, mask, skip_first=not args.keep_sinks, seed=args.seed)
    return source, {"base": base, "aligned": aligned}, (args.base, args.aligned)


def cached_source(args):
    """Rows read from a paired cache, with the sink/outlier rules applied (and recorded)."""
    from harness.caching import PairedActivations
    from probes.crosscoder.cached import CachedPairSource

    cache = PairedActivations(out_folder(args.cache, args.runs))
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in args.layers] if args.layers is not None else None
    source = CachedPairSource(cache, hooks, position=not args.keep_sinks, special=not args.keep_sinks,
                              norm_ratio=None if args.keep_outliers else args.norm_ratio,
                              batch_size=args.batch_size, seed=args.seed)
    return source, dict(cache.job["models"]), source.models


def exclusion_record(args, source) -> dict:
    """What training leaves out and why, for exclusion.json and the manifest's notes."""
    if hasattr(source, "report"):
        report = source.report()
        parts = [f"{report['left_out'][rule]} {why}" for rule, why in report["why"].items()]
        note = (f"left out of training {report['positions'] - report['kept']} of {report['positions']} cached "
                f"positions: {'; '.join(parts) or 'no rule'}")
        return {**report, "note": note}
    rule = "first position of each context (attention sink)" if source.skip_first else None
    return {"why": {"position": rule} if rule else {},
            "note": f"left out of training: the {rule}" if rule else "left out of training: nothing"}


def _load(args):
    from probes.crosscoder.io import load_crosscoder

    cc = load_crosscoder(args.crosscoder, device=args.device, runs_root=args.runs)
    base, aligned = load_pair(args)
    from probes.crosscoder.config import CrosscoderError

    if base.cfg.d_model != cc.cfg.d_in:
        raise CrosscoderError(f"the crosscoder reads d_in {cc.cfg.d_in} but {args.base} has d_model {base.cfg.d_model}; "
                              "use the pair it was trained on")
    from probes.activations import layer_of

    for h in cc.cfg.hooks:
        layer = layer_of(h)
        if layer is not None and layer >= base.cfg.n_layers:
            raise CrosscoderError(f"the crosscoder reads {h} but {args.base} has {base.cfg.n_layers} layers; "
                                  "use the pair it was trained on")
        base.check_hook_names([h])
    return cc, base, aligned


def cmd_eval(args) -> int:
    from harness.runs import RunStore
    from probes.crosscoder.data import ModelPairSource, contexts_from_texts
    from probes.crosscoder.evaluate import evaluate, spliced_losses

    store = RunStore(args.runs)
    if args.name:
        store.check_available(args.name)
    cc, base, aligned = _load(args)
    tokens, mask = contexts_from_texts(base, texts_for(args, base), args.context)
    source = ModelPairSource(base, aligned, list(cc.cfg.hooks), tokens, mask, contexts_per_block=len(tokens))
    metrics = evaluate(cc, [source.rows(__import__("torch").arange(len(tokens)))])
    metrics["spliced"] = spliced_losses(cc, base, aligned, tokens, mask)
    with store.create("crosscoder-eval", name=args.name, command=command_line(),
                      config={k: v for k, v in vars(args).items() if k != "func"}) as run:
        run.write_json("metrics.json", metrics)
    fvu = list(metrics["fvu"].values())  # keyed by the model names the crosscoder was trained with
    for i, role in enumerate(("base", "aligned")):
        s = metrics["spliced"][role]
        print(f"{role}: FVU {fvu[i]:.4f}; CE {s['ce_clean']:.4f} -> {s['ce_spliced']:.4f} spliced; KL {s['kl']:.4f}")
    print(f"L0 {metrics['l0']:.1f}; dead {metrics['dead_fraction']:.1%}")
    print(f"run {run.path}")
    return 0


def cmd_latents(args) -> int:
    from harness.runs import RunStore
    from probes.crosscoder.findings import crosscoder_findings
    from probes.findings import write_findings

    store = RunStore(args.runs)
    if args.name:
        store.check_available(args.name)
    cc, base, aligned = _load(args)
    f = crosscoder_findings(cc, base, aligned, texts_for(args, base), length=args.context)
    with store.create("crosscoder-latents", name=args.name, command=command_line(),
                      config={k: v for k, v in vars(args).items() if k != "func"}) as run:
        write_findings(run, f)
    print(f"{f.extra['n_aligned_only']} aligned-only latents (relative norm >= 0.9, not artefacts); "
          f"{f.extra['n_artefacts']} flagged by Latent Scaling as artefacts")
    for x in f.latents[:5]:
        print(f"  latent {x['id']}: fires on {x['score']:.0%} of texts; e.g. {x['contexts'][:1]}")
    print(f"run {run.path}")
    return 0
