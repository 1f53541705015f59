"""`harness demo` (`make demo`): the main job - what alignment changed in the embedded default pair.

1. The model-organism pair (`tiny-refusal`): a small Llama-style base model and a copy aligned by
   SFT then DPO to refuse one topic, with the ground truth in its metadata. Built on first use
   (about two minutes on two CPU cores), then read from the harness cache. Beside it, the
   organisms diffed too (`--also-diff`, default tiny-false-fact and tiny-backdoor): fine-tunes of
   the same base that implant a false fact and a triggered reply (about 30 s to build both).
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
   The same three methods, with the same settings, on each `--also-diff` organism (no
   evaluation stage for them), then one table: per organism and method, recovered or not (also
   in <prefix>-diff's scores.json, under "organisms").
                     -> runs <prefix>-<organism>-diff, <prefix>-<organism>-diff-{lens,kl,adl}
4. A look inside the real zoo models: greedy generations and cached activations. -> run <prefix>-zoo

Each stage writes one run; `harness app` opens them all. Heavy imports live inside functions:
the CLI imports this module only to register the subcommand.
"""

from __future__ import annotations

import time

from apps.cli.options import add_run_name, add_runs, command_line, positive_int
from harness.errors import HarnessError

DEFAULT_ORGANISM = "tiny-refusal"
ALSO_DIFF = ("tiny-false-fact", "tiny-backdoor")  # other implanted behaviours, diffed and scored too
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
    p.add_argument("--also-diff", default=",".join(ALSO_DIFF), metavar="O1,O2",
                   help=f"more organisms to diff and score, no evaluation (default: {','.join(ALSO_DIFF)}; 'none': only --organism)")
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
    also = [] if args.also_diff.strip().lower() == "none" else [o.strip() for o in args.also_diff.split(",") if o.strip()]
    runs = run_main_job(
        runs_dir=args.runs, prefix=args.name, organism=args.organism, also_diff=also, suite=args.suite, limit=args.limit,
        zoo_models=None if args.skip_zoo else (models or "installed"), max_new_tokens=args.max_new_tokens,
        device=args.device, command=command_line(), console=console,
    )
    console.print("[bold green]main job complete[/]; open the runs with `harness app`:")
    for stage, run in runs.items():
        console.print(f"  {stage:9s} {run.path}")
    return 0


def run_main_job(runs_dir=None, prefix: str | None = None, organism: str = DEFAULT_ORGANISM, also_diff=ALSO_DIFF,
                 suite: str = "default", limit: int | None = None, zoo_models="installed", max_new_tokens: int = 32,
                 device: str = "cpu", command: str | None = None, console=None) -> dict:
    """Run the stages above; returns {"eval": Run, "diff": Run, "diff-lens": Run, "diff-kl": Run,
    "diff-adl": Run, "<short>-diff": Run, "<short>-diff-<method>": Run for each also_diff organism
    (short: its name without "tiny-"), "zoo": Run} (zoo only if asked)."""
    from harness.organisms import get_spec
    from harness.runs import RunStore

    if max_new_tokens < 0:
        raise HarnessError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    store = RunStore(runs_dir)
    prefix = prefix or time.strftime("demo-%Y%m%d-%H%M%S")
    others = list(dict.fromkeys(o for o in also_diff if o != organism))
    for name in [organism, *others]:
        get_spec(name)  # an unknown name fails here, in one line, before any work
    stages = ["eval", "diff"] + (["zoo"] if zoo_models else [])
    names = stages + [f"diff-{m}" for m in METHODS]
    names += [f"{short_name(o)}-{stage}" for o in others for stage in ["diff", *(f"diff-{m}" for m in METHODS)]]
    for stage in names:  # refuse a taken or unsafe name before minutes of work
        store.check_available(f"{prefix}-{stage}")
    zoo_list = _zoo_models(zoo_models) if zoo_models else None

    say = console.print if console else print
    say(f"[1/{len(stages) + 1}] organism pair {organism!r}" + (f", and to diff too: {', '.join(others)}" if others else ""))
    pair = _organism(organism)
    with one_thread():
        other_pairs = [_organism(o) for o in others]
    runs = {}
    say(f"[2/{len(stages) + 1}] evaluation: base vs aligned on suite {suite!r}")
    runs["eval"] = _evaluate(pair, store, f"{prefix}-eval", suite, limit, device, command, console)
    say(f"[3/{len(stages) + 1}] model diff, scored against each organism's ground truth: {', '.join(METHODS)}")
    runs.update(_diff(pair, store, prefix, command, say, others=other_pairs))
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


def one_thread():
    """The tiny organisms build and diff on one torch thread (see harness.threads)."""
    from harness.threads import torch_threads

    return torch_threads(1)


def short_name(organism: str) -> str:
    """An organism's part of its run names: tiny-false-fact -> false-fact."""
    return organism.removeprefix("tiny-")


def _evaluate(pair, store, name, suite, limit, device, command, console):
    import harness
    from evals.organism_suite import add_to_eval_run, summary_lines
    from evals.runner import run_eval

    say = console.print if console else print
    models = {"base": str(pair["base"]), "aligned": str(pair["aligned"])}
    run = run_eval(models, suite=suite, runs_dir=store.root, name=name, limit=limit, device=device,
                   command=command, console=console)
    behaviour = pair["ground_truth"].get("behaviour", "refusal")
    if behaviour != "refusal":  # the organism suite measures refusal; this one's rates are in its metadata
        line = f"organism suite: not for a {behaviour} organism; measured at build: {pair['measured']['aligned']}"
        say(line, markup=False) if console else say(line)
        return run
    base, aligned = harness.load(pair["base"], device=device), harness.load(pair["aligned"], device=device)
    result, note = add_to_eval_run(run, base, aligned, pair["aligned"])
    say(f"[yellow]note:[/] {note}" if console else f"note: {note}")
    for line in summary_lines(result):
        say(line, markup=False) if console else say(line)
    return run


def _diff(pair, store, prefix, command, say, others=()) -> dict:
    """Each method's scored run for `pair` and for every pair in `others`, an overview run for
    each, then the per-organism table; prints the headline and the tables. The main pair's
    overview (<prefix>-diff) also holds the table of all of them."""
    done = _diff_methods(pair, store, prefix, command)
    for line in headline(done["truth"], done["findings"], done["scores"]) + scoring_lines(done["organism"], done["truth"],
                                                                                          done["table"]):
        say(line, markup=False) if say is not print else say(line)
    runs = dict(done["runs"])
    extra = []
    for other in others:
        short = short_name(other.get("name") or "")
        with one_thread():
            o = _diff_methods(other, store, f"{prefix}-{short}", command)
            o["overview"] = _overview(o, store, f"{prefix}-{short}-diff", command)
        runs.update({f"{short}-{stage}": run for stage, run in o["runs"].items()}, **{f"{short}-diff": o["overview"]})
        for line in headline(o["truth"], o["findings"], o["scores"]) + scoring_lines(o["organism"], o["truth"], o["table"]):
            say(line, markup=False) if say is not print else say(line)
        extra.append(o)
    overviews = {done["organism"]: f"{prefix}-diff", **{o["organism"]: o["overview"].name for o in extra}}
    table = organisms_table([done, *extra], overviews)
    runs["diff"] = _overview(done, store, f"{prefix}-diff", command, organisms=table)
    if extra:
        for line in recovered_lines(table):
            say(line, markup=False) if say is not print else say(line)
    return runs


def _diff_methods(pair, store, prefix, command) -> dict:
    """Run and score each method on one pair, one run each (<prefix>-diff-<method>)."""
    import harness
    from probes.adl import activation_difference, adl_findings, unrelated_texts, write_adl
    from probes.diff import diff_models, kl_findings, lens_findings, write_diff
    from probes.findings import prompt_sets, score_findings, write_findings

    truth = pair["ground_truth"]
    sets = prompt_sets(truth)
    organism = pair.get("name") or str(pair["aligned"])
    base, aligned = harness.load(pair["base"]), harness.load(pair["aligned"])
    tok = aligned.tokenizer
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
    return {"organism": organism, "truth": truth, "sets": sets, "base": base, "aligned": aligned, "runs": runs,
            "findings": findings, "scores": scores, "table": table}


def _overview(done: dict, store, name, command, organisms: list[dict] | None = None):
    """The overview run: per-layer diff and per-position KL on every held-out prompt (the
    dashboard's heatmap) and the scoring table (scores.json)."""
    from probes.diff import diff_models, write_diff

    truth, sets, organism = done["truth"], done["sets"], done["organism"]
    prompts = sets["topic"] + sets["control"]
    with store.create("diff", name=name, command=command,
                      config={"organism": organism, "ground_truth": truth, "prompts": prompts,
                              "prompt_sets": {k: len(v) for k, v in sets.items()}, "positions": "last"}) as run:
        write_diff(diff_models(done["base"], done["aligned"], prompts, positions="last"), run, base=done["base"],
                   aligned=done["aligned"])
        scores = {"organism": organism, "truth": {k: truth.get(k) for k in TRUTH_KEYS if k in truth}, "k": TOP_K,
                  "methods": done["table"]}
        if organisms:
            scores["organisms"] = organisms
        run.write_json("scores.json", scores)
        run.add_metrics({f"recovered/{m}": done["scores"][m]["recovered"] for m in METHODS})
    return run


TRUTH_KEYS = ("behaviour", "topic", "refusal", "summary", "implanted_text", "trigger", "subject", "true_value",
              "false_value")


def organisms_table(done: list[dict], runs_of: dict) -> list[dict]:
    """One row per organism: its behaviour and, per method, whether it was recovered."""
    return [{"organism": d["organism"], "behaviour": d["truth"].get("behaviour"), "summary": behaviour_line(d["truth"]),
             "overview": runs_of.get(d["organism"]),
             "recovered": {**{m: d["scores"][m]["recovered"] for m in METHODS}, **{m: None for m in NOT_RUN}},
             "evidence": {m: d["scores"][m]["summary"] for m in METHODS}} for d in done]


def recovered_lines(table: list[dict]) -> list[str]:
    methods = [*METHODS, *NOT_RUN]
    lines = ["  recovered, per organism and method (each scored against its own ground truth; - = not run):",
             f"    {'organism':18s} {'behaviour':11s} " + " ".join(f"{m:10s}" for m in methods)]
    for row in table:
        cells = ["-" if row["recovered"][m] is None else ("yes" if row["recovered"][m] else "no") for m in methods]
        lines.append(f"    {row['organism']:18s} {str(row['behaviour']):11s} " + " ".join(f"{c:10s}" for c in cells))
    return lines


def behaviour_line(truth: dict) -> str:
    """What the organism was made to do, in a phrase (organisms built before truths had a summary: refusal)."""
    return truth.get("summary") or (f"{truth.get('behaviour')} of {truth.get('topic')} questions with "
                                    f"{truth.get('refusal')!r}")


def headline(truth: dict, findings: dict, scores: dict) -> list[str]:
    """The diff's headline: what the methods that found the implanted behaviour found."""
    lines = []
    implanted = truth.get("refusal") or truth.get("implanted_text")
    labels = {"topic": "topic", "control": "control", **(truth.get("prompt_set_labels") or {})}
    tokens = scores.get("adl", {}).get("criteria", {}).get("tokens")
    if tokens and tokens["recovered"]:
        f = findings["adl"]
        top = [t["token"] for t in f.tokens[:TOP_K]]
        lines.append(f"  headline: the aligned model was changed toward {implanted!r} - the activation-difference "
                     f"lens (layer {f.extra.get('layer')}, first {f.extra.get('k_positions')} positions of unrelated text) "
                     f"reads {len(tokens['hits'])} of its pieces {tokens['hits']} in its top {TOP_K}: {top}")
        steered = [r for r in f.extra.get("steered", []) if r["model"] == "base"][:2]
        for r in steered:
            lines.append(f"    steering the base with it: {r['prompt']!r} -> {r['reply']!r}")
    lens = scores.get("lens", {}).get("criteria", {}).get("tokens")
    if lens:
        what = "refusal" if truth.get("refusal") else "implanted"
        named = f" ({labels['topic']})" if labels["topic"] != "topic" else ""
        lines.append(f"  diff lens on the topic prompts{named} at the reply's first position: {len(lens['hits'])} "
                     f"{what} pieces {lens['hits']} in the top {TOP_K}: {[t['token'] for t in findings['lens'].tokens[:10]]}")
    kl = scores.get("kl", {}).get("criteria", {}).get("kl")
    if kl:
        lines.append(f"  next-token KL at the reply: {labels['topic']} {kl['topic']:.3g} vs {labels['control']} "
                     f"{kl['control']:.3g} nats ({kl['ratio']:.0f}x)"
                     + (": the change is narrow, on the topic" if kl["recovered"] else ""))
    if not any(s["recovered"] for s in scores.values()):
        lines.append(f"  headline: NO method recovered the implanted behaviour ({behaviour_line(truth)})")
    return lines


def scoring_lines(organism: str, truth: dict, table: list[dict]) -> list[str]:
    lines = [f"  scoring against the ground truth of {organism} ({behaviour_line(truth)}):",
             f"    {'method':11s} {'recovered':13s} evidence"]
    for row in table:
        verdict = "-" if row["recovered"] is None else ("yes" if row["recovered"] else "NOT recovered")
        lines.append(f"    {row['method']:11s} {verdict:13s} {row['evidence']}")
    missed = [r["method"] for r in table if r["recovered"] is False]
    if missed:
        lines.append(f"    NOT recovered by {', '.join(missed)}: those methods missed the implanted behaviour here")
    return lines
