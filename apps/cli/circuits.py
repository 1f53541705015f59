"""`harness circuits`: run one circuit analysis on a model and write a run.

    harness circuits heads --model smollm2-135m-instruct              # induction / previous / duplicate scores
    harness circuits patch --model smollm2-135m-instruct --task ioi --sweep heads --attribution
    harness circuits lens --model smollm2-135m-instruct --task ioi    # logit lens + direct logit attribution
    harness circuits ablate --model smollm2-135m-instruct --task ioi --method mean

The run holds results.safetensors (the tensors), summary.json (top heads, metric values,
correlations) and figures/*.json (plotly figures, plotly.io.from_json reads them back).
"""

from __future__ import annotations

from apps.cli.options import add_run_name, add_runs, command_line, positive_int

ANALYSES = ("heads", "patch", "lens", "ablate")
SWEEPS = ("heads", "heads_by_pos", "resid_pre", "attn_out", "mlp_out", "experts")


def register(subparsers) -> None:
    p = subparsers.add_parser("circuits", help="circuit analysis (patching, lenses, head detectors)",
                              description="Run a circuit analysis on a model and save it as a run.")
    p.add_argument("analysis", choices=ANALYSES, help="heads: head detector scores; patch: activation patching "
                   "sweep; lens: logit lens and direct logit attribution; ablate: ablate each head")
    p.add_argument("--model", required=True, help="zoo name, model folder, .gguf file or HF id")
    p.add_argument("--task", default="ioi", help="ioi, induction, greater-than or factual (default: ioi)")
    p.add_argument("--sweep", default="heads", choices=SWEEPS, help="what `patch` patches (default: heads)")
    p.add_argument("--attribution", action="store_true", help="with `patch`: also attribution patching, and "
                   "its correlation with the real sweep")
    p.add_argument("--method", default="mean", help="with `ablate`: zero, mean or resample (default: mean)")
    p.add_argument("--n", type=positive_int, default=8, help="prompts (default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None, help="patched runs per forward (default: ~32 rows)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    add_run_name(p, default=None, help="run name (default: circuits-<time>)")
    add_runs(p)
    p.set_defaults(func=cmd_circuits)


def cmd_circuits(args) -> int:
    import torch

    import harness
    from harness.runs import RunStore

    if args.threads:
        torch.set_num_threads(args.threads)
    store = RunStore(args.runs)
    if args.name:
        store.check_available(args.name)
    model = harness.load(args.model).eval()
    config = {k: getattr(args, k) for k in ("analysis", "model", "task", "sweep", "attribution", "method", "n", "seed")}
    command = command_line()
    with store.create("circuits", name=args.name, command=command, config=config, seed=args.seed) as run:
        run.add_model(args.model, model)
        with run.timer(args.analysis):
            tensors, summary, figures = ANALYSIS_FUNCS[args.analysis](model, args)
        run.write_tensors("results.safetensors", tensors)
        run.write_json("summary.json", summary)
        for name, fig in figures.items():
            run.write_text(f"figures/{name}.json", fig.to_json(), "json")
        run.finish(metrics={k: v for k, v in summary.items() if isinstance(v, (int, float))})
    print(run.path)
    return 0


def _heads(model, args):
    from probes.circuits import figures as F
    from probes.circuits.heads import head_scores, top_heads

    scores = head_scores(model, n=args.n, seed=args.seed)
    summary = {f"top_{k}": top_heads(v, 5) for k, v in scores.items()}
    summary["max_induction_score"] = float(scores["induction"].nan_to_num(float("-inf")).max())  # NaN: no heads
    figs = {k: F.head_heatmap(v, f"{k.replace('_', ' ')} score", diverging=False) for k, v in scores.items()}
    return scores, summary, figs


def _task(model, args):
    import torch

    from probes.circuits.core import normalized, scalar
    from probes.circuits.tasks import task

    prompts, metric = task(model, args.task, n=args.n, seed=args.seed)
    with torch.no_grad():
        clean = scalar(metric, model(prompts.clean)).item()
        corrupted = scalar(metric, model(prompts.corrupted)).item()
    return prompts, metric, normalized(metric, clean, corrupted), clean, corrupted


def _patch(model, args):
    from probes.circuits import figures as F
    from probes.circuits.attribution import ATTRIBUTIONS
    from probes.circuits.core import correlation
    from probes.circuits.heads import top_heads
    from probes.circuits.patching import SWEEPS as PATCH

    prompts, _, metric, clean, corrupted = _task(model, args)
    result = PATCH[args.sweep](model, prompts.clean, prompts.corrupted, metric, batch_size=args.batch_size)
    tensors = {"patching": result, "clean_tokens": prompts.clean, "corrupted_tokens": prompts.corrupted}
    summary = {"task": args.task, "sweep": args.sweep, "clean_metric": clean, "corrupted_metric": corrupted,
               "texts": prompts.texts}
    figs = {"patching": _sweep_figure(F, model, prompts, result, f"activation patching: {args.sweep} ({args.task})")}
    if args.sweep in ("heads", "experts"):
        summary["top"] = top_heads(result.nan_to_num(float("-inf")), 5)
    if args.attribution:
        est = ATTRIBUTIONS[args.sweep](model, prompts.clean, prompts.corrupted, metric)
        keep = ~result.isnan()
        tensors["attribution"] = est
        summary["attribution_correlation"] = correlation(est[keep], result[keep])
        figs["attribution"] = _sweep_figure(F, model, prompts, est, f"attribution patching: {args.sweep} ({args.task})")
    return tensors, summary, figs


def _sweep_figure(F, model, prompts, values, title):
    if values.dim() == 3:  # heads by position: sum over positions is the all-positions picture
        values = values.sum(1)
    if values.shape[-1] == prompts.clean.shape[1] and values.dim() == 2 and model.tokenizer is not None:
        return F.layer_pos_heatmap(values, model.to_str_tokens(prompts.clean[0]), title, "recovered")
    return F.heatmap(values, title, "expert" if "experts" in title else "head", "layer", colorbar="recovered")


def _lens(model, args):
    from probes.circuits import figures as F
    from probes.circuits.lens import direct_logit_attribution, logit_lens_diff

    prompts, *_ = _task(model, args)
    if prompts.answers is None:
        from harness.errors import ConfigError

        raise ConfigError(f"the {args.task} task has no answer pair to attribute; use ioi or factual")
    lens = logit_lens_diff(model, prompts.clean, prompts.answers)
    dla = direct_logit_attribution(model, prompts.clean, prompts.answers)
    tensors = {"logit_lens": lens, "dla_heads": dla.heads, "dla_mlps": dla.mlps}
    if dla.experts is not None:
        tensors["dla_experts"] = dla.experts
    summary = {"task": args.task, "logit_diff": dla.total, "embed": dla.embed,
               "top_heads": [(l, h, v) for l, h, v in _top(dla.heads)]}
    figs = {"logit_lens": F.line(lens, "logit lens: logit difference after each layer", "layer", "logit diff"),
            "dla_heads": F.head_heatmap(dla.heads, "direct logit attribution by head", "logit diff")}
    return tensors, summary, figs


def _top(values, k=5):
    from probes.circuits.heads import top_heads

    return top_heads(values.abs(), k)


def _ablate(model, args):
    from probes.circuits import figures as F
    from probes.circuits.ablation import ablation_sweep

    prompts, metric, _, clean, _ = _task(model, args)
    reference = prompts.corrupted if args.method != "zero" else None
    result = ablation_sweep(model, prompts.clean, metric, method=args.method, reference=reference,
                            batch_size=args.batch_size)
    summary = {"task": args.task, "method": args.method, "clean_metric": clean,
               "top": [(l, h, float(result[l, h])) for l, h, _ in _top(result - clean)]}
    fig = F.head_heatmap(result - clean, f"{args.method} ablation of each head ({args.task})", "metric change")
    return {"ablation": result}, summary, {"ablation": fig}


ANALYSIS_FUNCS = {"heads": _heads, "patch": _patch, "lens": _lens, "ablate": _ablate}
