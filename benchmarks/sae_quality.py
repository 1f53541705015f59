"""SAE quality on real weights: the token budget a SmolLM2-135M SAE needs to recover the loss.

For each architecture (TopK, BatchTopK, JumpReLU by default) SAEs are trained from the harness
activation cache of one middle layer with the harness's default (sink- and outlier-aware)
settings, at growing token budgets, each evaluated on held-out text: CE loss recovered, KL,
explained variance and L0. An architecture's sweep stops at the first budget that reaches the
target (CE loss recovered >= --target at L0 <= --max-l0). Prints a table and the budget each
architecture needed, and writes the curve of CE recovered against tokens as a plotly figure
(--figure, HTML) with the figures as JSON beside it.

Every SAE is a run under --runs (named quality-ARCH-TOKENS): rerunning skips the budgets already
evaluated and resumes an interrupted training (`sae train` resumes), so the sweep can be grown
bit by bit on a busy machine.

Usage: python benchmarks/sae_quality.py [--model smollm2-135m-instruct] [--hook blocks.12.hook_resid_post]
           [--cache runs/sae-quality-l12-cache] [--cache-tokens 800k] [--archs topk,batchtopk,jumprelu]
           [--budgets 200k,400k,800k,1.6M] [--d-sae 2304] [--k 32] [--jumprelu-sparsity 2.0]
           [--target 0.8] [--max-l0 64] [--eval-tokens 8k] [--threads 2] [--figure sae_quality.html]
           [--partial-cache]
Without a cache at --cache, one is written first (--cache-tokens of the corpus's train split).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def tokens_arg(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def figure(results: dict, target: float, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for arch, rows in results.items():
        rows = sorted(rows, key=lambda r: r["tokens"])
        fig.add_trace(go.Scatter(x=[r["tokens"] for r in rows], y=[r["ce_loss_recovered"] for r in rows],
                                 mode="lines+markers", name=arch,
                                 text=[f"L0 {r['l0']:.1f}, EV {r['explained_variance']:.3f}, KL {r['kl_div']:.3f}"
                                       for r in rows], hovertemplate="%{x:,} tokens: %{y:.3f} (%{text})"))
    fig.add_hline(y=target, line_dash="dash", annotation_text=f"target {target}")
    fig.update_layout(title="SmolLM2-135M SAEs: CE loss recovered vs training tokens (harness cache, default "
                            "sink-aware settings)", xaxis_title="training tokens", yaxis_title="CE loss recovered",
                      xaxis_type="log", template="plotly_white")
    fig.write_html(str(path), include_plotlyjs="cdn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--hook", default="blocks.12.hook_resid_post")
    parser.add_argument("--corpus", default="stdlib-docs")
    parser.add_argument("--cache", default="runs/sae-quality-l12-cache")
    parser.add_argument("--cache-tokens", type=tokens_arg, default=800_000)
    parser.add_argument("--partial-cache", action="store_true",
                        help="use the finished shards of a cache that is still being written")
    parser.add_argument("--runs", default="runs", help="where the SAE runs go")
    parser.add_argument("--archs", default="topk,batchtopk,jumprelu")
    parser.add_argument("--budgets", default="200k,400k,800k,1.6M")
    parser.add_argument("--d-sae", type=int, default=2304)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--jumprelu-sparsity", type=float, default=None, help="JumpReLU's L0 coefficient")
    parser.add_argument("--lr", type=float, default=None, help="default: train_sae's")
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--max-l0", type=float, default=64)
    parser.add_argument("--eval-tokens", type=tokens_arg, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", default="sae_quality.html")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import harness
    from harness.caching import CachedActivations, cache_activations
    from probes.sae import evaluate_sae, heldout_tokens, load_sae, train_sae

    model = harness.load(args.model)
    cache = Path(args.cache)
    if not (cache / "manifest.json").exists():
        print(f"caching {args.cache_tokens:,} tokens of {args.hook} to {cache}")
        cache_activations(model, [args.hook], args.corpus, args.cache_tokens, cache, dtype="float16")
    cache = CachedActivations(cache, allow_incomplete=args.partial_cache)
    heldout = heldout_tokens(model, args.corpus, args.eval_tokens, cache.context_length)
    runs = Path(args.runs)
    results: dict[str, list[dict]] = {}
    needed: dict[str, int | None] = {}
    print(f"SAE quality: {args.model} {args.hook}, d_sae {args.d_sae}, cache {cache.n_contexts * cache.context_length:,}"
          f" tokens, eval {heldout.numel():,} held-out tokens, torch threads {args.threads}")
    print(f"{'arch':>10} {'tokens':>10} {'CE rec':>7} {'KL':>7} {'EV':>6} {'L0':>6} {'train s':>8}")
    for arch in args.archs.split(","):
        results[arch], needed[arch] = [], None
        for budget in [tokens_arg(b) for b in args.budgets.split(",")]:
            name = f"quality-{arch}-{budget}"
            folder = runs / name
            kw = {"k": args.k} if arch in ("topk", "batchtopk") else {"sparsity": args.jumprelu_sparsity}
            if args.lr is not None:
                kw["lr"] = args.lr
            eval_file = folder / "eval.json"
            seconds = None
            if eval_file.exists():
                metrics = json.loads(eval_file.read_text())
                sae = None
            else:
                started = time.perf_counter()
                if (folder / "manifest.json").exists() and \
                        json.loads((folder / "manifest.json").read_text()).get("status") == "complete":
                    sae = load_sae(folder)
                else:
                    sae = train_sae(model, args.hook, cache=cache, arch=arch, d_sae=args.d_sae, tokens=budget,
                                    batch_tokens=args.batch_tokens, out=folder, progress=False, log_every=25, **kw).sae
                seconds = time.perf_counter() - started
                ev = evaluate_sae(sae, model, args.hook, tokens=heldout, progress=False)
                from harness.runs import RunStore

                ev.write(RunStore(runs).open(folder))
                metrics = ev.metrics
            row = {"tokens": budget, "train_seconds": seconds,
                   **{k: metrics[k] for k in ("ce_loss_recovered", "kl_div", "explained_variance", "l0", "mse",
                                              "ce_clean", "ce_spliced", "ce_zero_ablated")}}
            results[arch].append(row)
            print(f"{arch:>10} {budget:>10,} {row['ce_loss_recovered']:>7.3f} {row['kl_div']:>7.3f} "
                  f"{row['explained_variance']:>6.3f} {row['l0']:>6.1f} "
                  f"{seconds if seconds is not None else float('nan'):>8.0f}", flush=True)
            figure(results, args.target, Path(args.figure))
            Path(args.figure).with_suffix(".json").write_text(json.dumps(
                {"model": args.model, "hook": args.hook, "d_sae": args.d_sae, "target": args.target,
                 "max_l0": args.max_l0, "results": results, "needed": needed}, indent=1))
            if row["ce_loss_recovered"] >= args.target and row["l0"] <= args.max_l0:
                needed[arch] = budget
                break
    for arch, budget in needed.items():
        best = max(results[arch], key=lambda r: r["ce_loss_recovered"])
        print(f"{arch}: " + (f"CE loss recovered >= {args.target} at L0 <= {args.max_l0:g} after {budget:,} tokens"
                             if budget else f"target not reached; best CE loss recovered {best['ce_loss_recovered']:.3f}"
                                            f" at L0 {best['l0']:.1f} ({best['tokens']:,} tokens)"))
    Path(args.figure).with_suffix(".json").write_text(json.dumps(
        {"model": args.model, "hook": args.hook, "d_sae": args.d_sae, "target": args.target, "max_l0": args.max_l0,
         "results": results, "needed": needed}, indent=1))
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
