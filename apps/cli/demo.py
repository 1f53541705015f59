"""`harness demo` (`make demo`): the main job - what alignment changed in the embedded default pair.

1. The model-organism pair (`tiny-refusal`): a small Llama-style base model and a copy aligned by
   SFT then DPO to refuse one topic, with the ground truth in its metadata. Built on first use
   (about two minutes on two CPU cores), then read from the harness cache.
2. The benchmark runner (lm-eval underneath) on both: per-task scores, paired differences with
   bootstrap confidence intervals, next-token KL.                         -> run <prefix>-eval
   The organism's own suite next to them: refusal and exact answers on its held-out topic and
   control prompts, and next-token KL at the reply (organism_suite.json; the standard suites'
   English tasks are beyond a tiny organism, and the run says so).
3. Model diffing, scored against the organism's ground truth: the diff lens on the topic prompts
   at the reply's first position, per-prompt-set KL (topic vs control) and the activation-
   difference lens (first 5 positions of unrelated text, steering on control prompts). Each
   method writes findings.json + score.json in its own run; the overview run holds the
   per-layer diff on all held-out prompts and the scoring table (scores.json).
                                              -> runs <prefix>-diff, <prefix>-diff-{lens,kl,adl}
4. A look inside the real zoo models: greedy generations and cached activations. -> run <prefix>-zoo

Each stage writes one run; `harness app` opens them all. Heavy imports live inside functions:
the CLI imports this module only to register the subcommand.
"""

from __future__ import annotations

import time

from apps.cli.options import add_run_name, add_runs, command_line, positive_int
from harness.errors import HarnessError

DEFAULT_ORGANISM = "tiny-refusal"
METHODS = ("lens", "kl", "adl")  # the diffing methods the main job runs and scores
TOP_K = 20  # tokens searched for the implanted ones
NOT_RUN = {"crosscoder": "not run by the demo (a crosscoder needs thousands of training steps to be useful; "
                         "`harness crosscoder train` then `harness diff --method crosscoder`)"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the main job: evaluate and diff the default base/aligned pair, then look at the zoo models",
        description=__doc__.split("\n\n")[0] + " Stages: organism pair, evaluation, diff, zoo look.")
    add_runs(p)
    add_run_name(p, help="prefix of the run names (default: demo-<timestamp>)")
    p.add_argument("--organism", default=DEFAULT_ORGANISM, help=f"the base/aligned pair (default: {DEFAULT_ORGANISM})")
    p.add_argument("--suite", default="default", help="evaluation suite (default: default)")
    p.add_argument("--limit", type=positive_int, help="at most N items per task")
    p.add_argument("--models", metavar="M1,M2", help="zoo models for the last stage (default: the installed ones)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N", help="tokens to generate per prompt in the zoo look")
    p.add_argument("--skip-zoo", action="store_true", help="leave out the zoo-model stage")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=main)


def main(args) -> int:

    from rich.console import Console

    console = Console()
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    runs = run_main_job(
        runs_dir=args.runs, prefix=args.name, organism=args.organism, suite=args.suite, limit=args.limit,
        zoo_models=None if args.skip_zoo else (models or "installed"), max_new_tokens=args.max_new_tokens,
        device=args.device, command=command_line(), console=console,
    )
    console.print("[bold green]main job complete[/]; open the runs with `harness app`:")
    for stage, run in runs.items():
        console.print(f"  {stage:9s} {run.path}")
    return 0


def run_main_job(runs_dir=None, prefix: str | None = None, organism: str = DEFAULT_ORGANISM, suite: str = "default",
                 limit: int | None = None, zoo_models="installed", max_new_tokens: int = 32, device: str = "cpu",
                 command: str | None = None, console=None) -> dict:
    """Run the stages above; returns {"eval": Run, "diff": Run, "diff-lens": Run, "diff-kl": Run,
    "diff-adl": Run, "zoo": Run} (zoo only if asked)."""
    from harness.runs import RunStore

    if max_new_tokens < 0:
        raise HarnessError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    store = RunStore(runs_dir)
    prefix = prefix or time.strftime("demo-%Y%m%d-%H%M%S")
    stages = ["eval", "diff"] + (["zoo"] if zoo_models else [])
    for stage in stages + [f"diff-{m}" for m in METHODS]:  # refuse a taken or unsafe name before minutes of work
        store.check_available(f"{prefix}-{stage}")
    zoo_list = _zoo_models(zoo_models) if zoo_models else None

    say = console.print if console else print
    say(f"[1/{len(stages) + 1}] organism pair {organism!r}")
    pair = _organism(organism)
    runs = {}
    say(f"[2/{len(stages) + 1}] evaluation: base vs aligned on suite {suite!r}")
    runs["eval"] = _evaluate(pair, store, f"{prefix}-eval", suite, limit, device, command, console)
    say(f"[3/{len(stages) + 1}] model diff, scored against the organism's ground truth: {', '.join(METHODS)}")
    runs.update(_diff(pair, store, prefix, command, say))
    if zoo_list:
        from apps.cli.look import run_look

        say(f"[4/{len(stages) + 1}] a look inside the zoo models: {', '.join(zoo_list)}")
        runs["zoo"] = run_look(zoo_list, store=store, name=f"{prefix}-zoo", max_new_tokens=max_new_tokens,
                               device=device, command=command)
    return runs


def _zoo_models(requested) -> list[str]:
    from apps.cli.look import DEFAULT_MODELS
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
    import harness
    from evals.organism_suite import add_to_eval_run, summary_lines
    from evals.runner import run_eval

    say = console.print if console else print
    models = {"base": str(pair["base"]), "aligned": str(pair["aligned"])}
    run = run_eval(models, suite=suite, runs_dir=store.root, name=name, limit=limit, device=device,
                   command=command, console=console)
    base, aligned = harness.load(pair["base"], device=device), harness.load(pair["aligned"], device=device)
    result, note = add_to_eval_run(run, base, aligned, pair["aligned"])
    say(f"[yellow]note:[/] {note}" if console else f"note: {note}")
    for line in summary_lines(result):
        say(line, markup=False) if console else say(line)
    return run


def _diff(pair, store, prefix, command, say) -> dict:
    """The overview diff run and one scored run per method; prints the headline and the table."""
    import harness
    from probes.adl import activation_difference, adl_findings, unrelated_texts, write_adl
    from probes.diff import diff_models, kl_findings, lens_findings, write_diff
    from probes.findings import prompt_sets, score_findings, write_findings

    truth = pair["ground_truth"]
    sets = prompt_sets(truth)
    organism = pair.get("name") or str(pair["aligned"])
    base, aligned = harness.load(pair["base"]), harness.load(pair["aligned"])
    tok = aligned.tokenizer
    prompts = sets["topic"] + sets["control"]
    runs, findings, scores, methods_config = {}, {}, {}, {}

    def method_run(method, config):
        return store.create("diff", name=f"{prefix}-diff-{method}", command=command,
                            config={"organism": organism, "method": method, "aligned": str(pair["aligned"]),
                                    "base": str(pair["base"]), **config})

    # lens: the diff lens on the topic prompts, at the position where the reply starts
    config = {"prompts": "heldout_topic_prompts", "positions": "last", "layer": "final"}
    with method_run("lens", config) as run:
        with run.timer("lens"):
            d = diff_models(base, aligned, sets["topic"], positions="last")
        write_diff(d, run, base=base, aligned=aligned)
        findings["lens"], methods_config["lens"], runs["diff-lens"] = lens_findings(d, prompt_set="topic"), config, run
    # kl: next-token KL at the reply's first position, per prompt set
    config = {"prompt_sets": {k: len(v) for k, v in sets.items()}, "positions": "last"}
    with method_run("kl", config) as run:
        with run.timer("kl"):
            findings["kl"] = kl_findings(base, aligned, sets)
        run.add_model("base", base)
        run.add_model("aligned", aligned)
        methods_config["kl"], runs["diff-kl"] = config, run
    # adl: mean difference at the first 5 positions of unrelated text, read at the middle layer
    config = {"texts": "stdlib-docs (64 documents)", "k_positions": 5, "layer": "middle",
              "steered_on": "first 4 held-out control prompts"}
    with method_run("adl", config) as run:
        with run.timer("adl"):
            adl = activation_difference(base, aligned, unrelated_texts(64), k=5)
            findings["adl"] = adl_findings(adl, base, aligned, sets["control"][:4], k=TOP_K)
        write_adl(adl, run)
        run.add_model("base", base)
        run.add_model("aligned", aligned)
        methods_config["adl"], runs["diff-adl"] = config, run
    for method in METHODS:
        run = runs[f"diff-{method}"]
        write_findings(run, findings[method])
        scores[method] = score_findings(findings[method], truth, tokenizer=tok, k=TOP_K)
        run.write_json("score.json", scores[method])
        run.add_metrics({"recovered": scores[method]["recovered"]})

    table = [{"organism": organism, "method": m, "run": runs[f"diff-{m}"].name, "recovered": scores[m]["recovered"],
              "evidence": scores[m]["summary"], "how": methods_config[m]} for m in METHODS]
    table += [{"organism": organism, "method": m, "run": None, "recovered": None, "evidence": why, "how": {}}
              for m, why in NOT_RUN.items()]
    # the overview: per-layer diff and per-position KL on every held-out prompt (the dashboard's heatmap)
    with store.create("diff", name=f"{prefix}-diff", command=command,
                      config={"organism": organism, "ground_truth": truth, "prompts": prompts,
                              "prompt_sets": {k: len(v) for k, v in sets.items()}, "positions": "last"}) as run:
        write_diff(diff_models(base, aligned, prompts, positions="last"), run, base=base, aligned=aligned)
        run.write_json("scores.json", {"organism": organism, "truth": {k: truth.get(k) for k in ("behaviour", "topic", "refusal")},
                                       "k": TOP_K, "methods": table})
        run.add_metrics({f"recovered/{m}": scores[m]["recovered"] for m in METHODS})
        runs["diff"] = run
    for line in headline(truth, findings, scores) + scoring_lines(organism, truth, table):
        say(line, markup=False) if say is not print else say(line)
    return runs


def headline(truth: dict, findings: dict, scores: dict) -> list[str]:
    """The diff's headline: what the methods that found the implanted behaviour found."""
    lines = []
    behaviour = f"{truth.get('behaviour', '?')} of {truth.get('topic', '?')} questions with {truth.get('refusal')!r}"
    tokens = scores.get("adl", {}).get("criteria", {}).get("tokens")
    if tokens and tokens["recovered"]:
        f = findings["adl"]
        top = [t["token"] for t in f.tokens[:TOP_K]]
        lines.append(f"  headline: the aligned model was changed toward {truth.get('refusal')!r} - the activation-difference "
                     f"lens (layer {f.extra.get('layer')}, first {f.extra.get('k_positions')} positions of unrelated text) "
                     f"reads {len(tokens['hits'])} of its pieces {tokens['hits']} in its top {TOP_K}: {top}")
        steered = [r for r in f.extra.get("steered", []) if r["model"] == "base"][:2]
        for r in steered:
            lines.append(f"    steering the base with it: {r['prompt']!r} -> {r['reply']!r}")
    lens = scores.get("lens", {}).get("criteria", {}).get("tokens")
    if lens:
        lines.append(f"  diff lens on the topic prompts at the reply's first position: {len(lens['hits'])} refusal pieces "
                     f"{lens['hits']} in the top {TOP_K}: {[t['token'] for t in findings['lens'].tokens[:10]]}")
    kl = scores.get("kl", {}).get("criteria", {}).get("kl")
    if kl:
        lines.append(f"  next-token KL at the reply: topic {kl['topic']:.3g} vs control {kl['control']:.3g} nats "
                     f"({kl['ratio']:.0f}x): the change is narrow, on the topic")
    if not any(s["recovered"] for s in scores.values()):
        lines.append(f"  headline: NO method recovered the implanted behaviour ({behaviour})")
    return lines


def scoring_lines(organism: str, truth: dict, table: list[dict]) -> list[str]:
    lines = [f"  scoring against the ground truth of {organism} ({truth.get('behaviour')} of {truth.get('topic')} "
             f"questions with {truth.get('refusal')!r}):", f"    {'method':11s} {'recovered':13s} evidence"]
    for row in table:
        verdict = "-" if row["recovered"] is None else ("yes" if row["recovered"] else "NOT recovered")
        lines.append(f"    {row['method']:11s} {verdict:13s} {row['evidence']}")
    missed = [r["method"] for r in table if r["recovered"] is False]
    if missed:
        lines.append(f"    NOT recovered by {', '.join(missed)}: those methods missed the implanted behaviour here")
    return lines
