"""Model diffing on the real pair: Gemma 3 270M against its refusal-DPO checkpoint, scored against
the recipe's ground truth (refuses harmful requests, answers harmless look-alikes).

Runs, through the `harness` CLI (so what is measured is what a user gets), each writing a run
under --runs and a score.json beside its findings:
    lens        diff lens on the held-out harmful prompts, at the reply's first position
    kl          next-token KL at the reply, harmful vs harmless prompts
    adl         activation-difference lens on unrelated text, read by the logit lens and steered
    crosscoder  a paired cache of one middle layer, a BatchTopK crosscoder trained from it,
                its aligned-only latents as findings
Prints one line per method (RECOVERED or NOT, with the scorer's detail) and the seconds each
took, and writes them as JSON (--out).

The recipe checkpoint is built first if it is missing (`harness recipe run
gemma-3-270m-refusal-dpo`: about 20 minutes on 2 cores).

Usage: python -m benchmarks.diff_gemma [--runs runs/diff-gemma] [--layer 9] [--cache-tokens 200k]
           [--steps 1500] [--methods lens,kl,adl,crosscoder] [--out diff_gemma.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE, ALIGNED = "gemma-3-270m", "gemma-3-270m-refusal-dpo"


def harness_cli(*argv) -> None:
    from apps.cli import main

    print("$ harness " + " ".join(argv), flush=True)
    status = main(list(argv))
    if status:
        raise SystemExit(f"harness {' '.join(argv)} exited {status}")


def score_of(runs: Path, name: str) -> dict:
    harness_cli("diff-score", name, "--runs", str(runs))
    return json.loads((runs / name / "score.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/diff-gemma")
    parser.add_argument("--layer", type=int, default=9, help="the layer ADL and the crosscoder read")
    parser.add_argument("--cache-tokens", default="200k")
    parser.add_argument("--steps", type=int, default=1500, help="crosscoder training steps")
    parser.add_argument("--d-latent", type=int, default=4096)
    parser.add_argument("--methods", default="lens,kl,adl,crosscoder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="diff_gemma.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from harness import zoo

    if ALIGNED not in zoo.known_names():
        harness_cli("recipe", "run", ALIGNED)
    runs = Path(args.runs)
    pair = ["--base", BASE, "--aligned", ALIGNED, "--runs", str(runs)]
    results = {}
    for method in args.methods.split(","):
        name = f"gemma-{method}"
        started = time.perf_counter()
        if not (runs / name / "score.json").is_file():
            if method == "crosscoder":
                cache, cc = "gemma-pair-cache", "gemma-crosscoder"
                if not (runs / cache / "manifest.json").is_file() or \
                        json.loads((runs / cache / "manifest.json").read_text()).get("status") != "complete":
                    harness_cli("cache", "--pair", BASE, ALIGNED, "--layers", str(args.layer), "--corpus",
                                "stdlib-docs", "--tokens", args.cache_tokens, "--name", cache, "--runs", str(runs))
                harness_cli("crosscoder", "train", *pair, "--cache", cache, "--steps", str(args.steps),
                            "--d-latent", str(args.d_latent), "--name", cc)
                harness_cli("diff", "--method", "crosscoder", "--crosscoder", cc, *pair, "--name", name)
            elif method == "adl":
                harness_cli("diff", "--method", "adl", "--adl-layer", str(args.layer), *pair, "--name", name)
            else:
                harness_cli("diff", "--method", method, *pair, "--name", name)
        score = score_of(runs, name)
        results[method] = {"recovered": score["recovered"], "summary": score["summary"],
                           "seconds": round(time.perf_counter() - started, 1)}
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nGemma 3 270M -> {ALIGNED}, scored against the recipe's ground truth:")
    for method, r in results.items():
        print(f"  {method:>10}: {'RECOVERED' if r['recovered'] else 'NOT recovered':>13}  ({r['seconds']:.0f} s)  "
              f"{r['summary']}")


if __name__ == "__main__":
    main()
