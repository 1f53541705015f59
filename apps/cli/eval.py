"""`harness eval`: run a benchmark suite on a base/aligned pair (or any models) and compare.

    harness eval --base smollm2-135m-instruct --aligned ./my-aligned --suite default
    harness eval --models a=./ckpt-a b=./ckpt-b c=gemma-3-270m --suite capability --limit 20
    harness eval --base B --aligned A --suite ./my_tasks/          # a folder of lm-eval YAMLs
    harness eval --base B --aligned A --suite hellaswag,arc_easy   # lm-eval built-ins (network)

The first model is the baseline of every comparison. Re-running with the same --name resumes
an interrupted run.
"""

from __future__ import annotations

from apps.cli.options import add_run_name, add_runs, command_line

import re
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate and compare models on a benchmark suite",
                              description="Evaluate models on a suite (lm-eval underneath) and report the paired differences.")
    p.add_argument("--base", help="the base model: zoo name, model folder, .gguf file or HF id")
    p.add_argument("--aligned", help="the aligned model to compare with the base")
    p.add_argument("--models", nargs="+", metavar="[LABEL=]MODEL", default=[],
                   help="more models (or all of them); the first one is the baseline if --base is not given")
    p.add_argument("--suite", default="default",
                   help="default, capability, alignment, full; comma-separated task names; or a folder of task YAMLs")
    p.add_argument("--limit", type=int, default=None, help="at most N items per task")
    add_runs(p)
    add_run_name(p, help="run name; an unfinished run of that name is resumed")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-kl", dest="kl", action="store_false", help="skip the next-token KL between models")
    p.add_argument("--chat-template", metavar="NAME",
                   help="give tokenizers without a chat template this one (gemma-turns: Gemma's turn format), "
                        "so a base model is prompted like its chat-tuned descendant. By default such a tokenizer "
                        "borrows the other models' template when it has their vocabulary; 'as-shipped' leaves "
                        "every tokenizer as it came")
    p.set_defaults(func=cmd_eval)


def parse_models(base: str | None, aligned: str | None, extra: list[str]) -> dict[str, str]:
    """--base/--aligned/--models -> {label: source}; labels default to a tidy form of the source."""
    from harness.errors import HarnessError

    models: dict[str, str] = {}
    for label, source in (("base", base), ("aligned", aligned)):
        if source:
            models[label] = source
    for spec in extra:
        label, sep, source = spec.partition("=")
        if not sep:
            source, label = spec, re.sub(r"[^A-Za-z0-9._-]+", "-", spec.rstrip("/").split("/")[-1]).strip("-.") or "model"
        if label in models:
            raise HarnessError(f"model label {label!r} is used twice; name them with LABEL=MODEL")
        models[label] = source
    if len(models) < 1:
        raise HarnessError("no models given; use --base B --aligned A, or --models M1 M2 ...")
    return models


def cmd_eval(args) -> int:
    import torch

    from evals.runner import run_eval
    from evals.suites import check_limit, resolve_suite
    from harness.errors import HarnessError
    from harness.runs import RunStore

    threads = torch.get_num_threads()
    models = parse_models(args.base, args.aligned, args.models)
    check_limit(args.limit)  # before anything is loaded or printed
    if args.batch_size < 1:
        raise HarnessError(f"--batch-size must be a whole number of at least 1, got {args.batch_size}")
    suite = resolve_suite(args.suite, limit=args.limit)  # malformed task files fail here, before any output
    store = RunStore(args.runs)
    store.check_writable()
    if args.name is not None:
        store.path_of(args.name)  # a name, never a path: refused before any work
    print(f"evaluating {', '.join(f'{k}={v}' for k, v in models.items())} on suite {args.suite!r} "
          f"(device {args.device}, {threads} torch threads)", file=sys.stderr)
    try:
        run_eval(models, suite, runs_dir=args.runs, name=args.name, limit=args.limit, batch_size=args.batch_size,
                 device=args.device, kl=args.kl, chat_template=args.chat_template, command=command_line())
    finally:
        suite.cleanup()
    return 0
