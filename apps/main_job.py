"""`harness demo` (`make demo`): the main job - what alignment changed in the embedded default pair.

1. The model-organism pair (`tiny-refusal`): a small Llama-style base model and a copy aligned by
   SFT then DPO to refuse one topic, with the ground truth in its metadata. Built on first use
   (about two minutes on two CPU cores), then read from the harness cache.
2. The benchmark runner (lm-eval underneath) on both: per-task scores, paired differences with
   bootstrap confidence intervals, next-token KL.                         -> run <prefix>-eval
3. Model diffing on the organism's held-out prompts: where the pair diverges, which tokens
   alignment promotes and suppresses, layer by layer.                     -> run <prefix>-diff
4. A look inside the real zoo models: greedy generations and cached activations. -> run <prefix>-zoo

Each stage writes one run; `harness app` opens them all. Heavy imports live inside functions:
the CLI imports this module only to register the subcommand.
"""

from __future__ import annotations

import time

from apps.options import positive_int
from harness.errors import HarnessError

DEFAULT_ORGANISM = "tiny-refusal"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the main job: evaluate and diff the default base/aligned pair, then look at the zoo models",
        description=__doc__.split("\n\n")[0] + " Stages: organism pair, evaluation, diff, zoo look.")
    p.add_argument("--runs", metavar="DIR", help="runs folder (default: $INTERP_HARNESS_RUNS or ./runs)")
    p.add_argument("--name", help="prefix of the run names (default: demo-<timestamp>)")
    p.add_argument("--organism", default=DEFAULT_ORGANISM, help=f"the base/aligned pair (default: {DEFAULT_ORGANISM})")
    p.add_argument("--suite", default="default", help="evaluation suite (default: default)")
    p.add_argument("--limit", type=positive_int, help="at most N items per task")
    p.add_argument("--models", metavar="M1,M2", help="zoo models for the last stage (default: the installed ones)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N", help="tokens to generate per prompt in the zoo look")
    p.add_argument("--skip-zoo", action="store_true", help="leave out the zoo-model stage")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=main)


def main(args) -> int:
    import shlex
    import sys

    from rich.console import Console

    console = Console()
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    runs = run_main_job(
        runs_dir=args.runs, prefix=args.name, organism=args.organism, suite=args.suite, limit=args.limit,
        zoo_models=None if args.skip_zoo else (models or "installed"), max_new_tokens=args.max_new_tokens,
        device=args.device, command=shlex.join(["harness", *sys.argv[1:]]), console=console,
    )
    console.print("[bold green]main job complete[/]; open the runs with `harness app`:")
    for stage, run in runs.items():
        console.print(f"  {stage:5s} {run.path}")
    return 0


def run_main_job(runs_dir=None, prefix: str | None = None, organism: str = DEFAULT_ORGANISM, suite: str = "default",
                 limit: int | None = None, zoo_models="installed", max_new_tokens: int = 32, device: str = "cpu",
                 command: str | None = None, console=None) -> dict:
    """Run the stages above; returns {"eval": Run, "diff": Run, "zoo": Run} (zoo only if asked)."""
    from harness.runs import RunStore

    if max_new_tokens < 0:
        raise HarnessError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    store = RunStore(runs_dir)
    prefix = prefix or time.strftime("demo-%Y%m%d-%H%M%S")
    stages = ["eval", "diff"] + (["zoo"] if zoo_models else [])
    for stage in stages:  # refuse a taken or unsafe name before minutes of work
        store.check_available(f"{prefix}-{stage}")
    zoo_list = _zoo_models(zoo_models) if zoo_models else None

    say = console.print if console else print
    say(f"[1/{len(stages) + 1}] organism pair {organism!r}")
    pair = _organism(organism)
    runs = {}
    say(f"[2/{len(stages) + 1}] evaluation: base vs aligned on suite {suite!r}")
    runs["eval"] = _evaluate(pair, store, f"{prefix}-eval", suite, limit, device, command, console)
    say(f"[3/{len(stages) + 1}] model diff on the organism's held-out prompts")
    runs["diff"] = _diff(pair, store, f"{prefix}-diff", command, console)
    if zoo_list:
        from apps.demo import run_demo

        say(f"[4/{len(stages) + 1}] a look inside the zoo models: {', '.join(zoo_list)}")
        runs["zoo"] = run_demo(zoo_list, store=store, name=f"{prefix}-zoo", max_new_tokens=max_new_tokens,
                               device=device, command=command)
    return runs


def _zoo_models(requested) -> list[str]:
    from apps.demo import DEFAULT_MODELS
    from harness import zoo

    if requested == "installed":
        return [m["name"] for m in zoo.list_models() if m["name"] in DEFAULT_MODELS and m["installed"]]
    known = zoo.known_names()
    for name in requested:
        if name not in known and not _is_path(name):
            zoo.resolve(name)  # raises UnknownModelError with suggestions
    return list(requested)


def _is_path(name: str) -> bool:
    from pathlib import Path

    return Path(name).expanduser().exists()


def _organism(name: str) -> dict:
    from harness.organisms import organism_pair

    return organism_pair(name)


def _evaluate(pair, store, name, suite, limit, device, command, console):
    from evals.runner import run_eval

    models = {"base": str(pair["base"]), "aligned": str(pair["aligned"])}
    return run_eval(models, suite=suite, runs_dir=store.root, name=name, limit=limit, device=device,
                    command=command, console=console)


def _diff(pair, store, name, command, console):
    import harness
    from probes.diff import diff_models, write_diff

    truth = pair["ground_truth"]
    prompts = truth["heldout_topic_prompts"] + truth["heldout_control_prompts"]
    base, aligned = harness.load(pair["base"]), harness.load(pair["aligned"])
    diff = diff_models(base, aligned, prompts, continue_with="aligned", max_new_tokens=8)
    run = store.create("diff", name=name, command=command,
                       config={"organism": str(pair["aligned"]), "ground_truth": truth, "prompts": prompts})
    with run:  # finishes the run as complete, or as failed with the error
        write_diff(diff, run, base=base, aligned=aligned)
    summary = diff.summary()
    (console.print if console else print)(
        f"  diverging layers {summary['diverging_layers']}; tokens the aligned model promotes most: "
        f"{summary['top_promoted'][:8]}")
    return run
