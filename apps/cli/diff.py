"""`harness diff`: where and how an aligned model differs from its base, on the same prompts.

    harness diff --base tiny-refusal-base --aligned tiny-refusal-aligned
    harness diff --base B --aligned A --prompts prompts.txt --continue-with aligned --sae ./my-sae
    harness diff --method kl|adl|crosscoder --base B --aligned A      (crosscoder: --crosscoder RUN)
    harness diff --method sae --sae SAE_RUN_OR_FOLDER --base B --aligned A
    harness diff-score RUN [--truth MODEL] [--k 20]                   score findings.json against truth

Without --prompts, a model organism's held-out topic prompts are read from the aligned
checkpoint's ground truth. Writes a run with layers.jsonl (cosine, norm ratio, CKA, lens KL per
layer), lens.jsonl (promoted/suppressed tokens per layer), kl.safetensors (per-position KL),
features.jsonl (with --sae) and summary.json. Every method also writes findings.json (one shape
for all methods, see probes/findings.py); `harness diff-score` reads it against the ground
truth recorded in the aligned checkpoint. Scoring is its own command, not `diff score`: `diff`
takes its models as required flags, and a positional action beside them would make
`harness diff --base ...` ambiguous.
"""

from __future__ import annotations

from apps.cli.options import add_runs, command_line

from pathlib import Path

from apps.cli.probe import add_common, chat_flag


def register(subparsers) -> None:
    p = subparsers.add_parser("diff", help="diff an aligned model against its base on the same prompts",
                              description="Per-layer activation differences, a diff lens, per-position KL and "
                                          "(with --sae) SAE features ranked by change.")
    p.add_argument("--method", choices=METHODS, default="lens",
                   help="lens: diff lens (default); kl: per-prompt-set KL (topic vs control); adl: activation-"
                        "difference lens; crosscoder: aligned-only latents of a trained crosscoder (--crosscoder); "
                        "sae: the features of one SAE (--sae) that fire more in the aligned model")
    p.add_argument("--base", required=True, help="the base model: zoo name, folder, .gguf or HF id")
    p.add_argument("--aligned", required=True, help="the aligned model (same architecture and tokenizer)")
    p.add_argument("--prompts", help=".txt/.jsonl file or builtin:harmful (default: an organism's ground-truth prompts)")
    p.add_argument("--limit", type=int, help="at most N prompts")
    p.add_argument("--positions", choices=("last", "response", "all"),
                   help="positions the lens averages over (default: response with --continue-with, else last)")
    p.add_argument("--continue-with", choices=("aligned", "base"), help="append this model's greedy continuation")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--sae", help="an SAE run (name or path) or SAELens folder: with lens, features ranked by change "
                                 "are added; --method sae diffs its features")
    p.add_argument("--top-k", type=int, default=25)
    p.add_argument("--crosscoder", help="--method crosscoder: a crosscoder folder or run (`harness crosscoder train`)")
    p.add_argument("--adl-positions", type=int, default=5, help="--method adl: first k positions of unrelated text")
    p.add_argument("--adl-layer", type=int, help="--method adl: layer read and steered (default: the middle one)")
    p.add_argument("--adl-strength", type=float, default=1.0, help="--method adl: steering strength (x mean norm)")
    add_common(p, model_flag=False)
    p.set_defaults(func=cmd_diff)

    s = subparsers.add_parser("diff-score", help="score a diff run's findings against the organism's ground truth",
                              description="Read findings.json of a diff run and compare it with the ground truth "
                                          "recorded in the aligned checkpoint: implanted tokens in the top k, "
                                          "aligned-only latents on topic, KL on topic vs controls.")
    s.add_argument("run", help="a diff run (name or path) holding findings.json")
    s.add_argument("--truth", help="model whose checkpoint records the ground truth (default: the run's --aligned)")
    s.add_argument("--k", type=int, default=20, help="top-k tokens searched for the implanted ones")
    add_runs(s)
    s.set_defaults(func=cmd_score)


METHODS = ("lens", "kl", "adl", "crosscoder", "sae")


def model_folder(source: str) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from harness import zoo
    from harness.errors import HarnessError

    try:
        return zoo.resolve(source) if source in zoo.known_names() else None
    except HarnessError:
        return None


def organism_prompts(source: str) -> list[str]:
    from harness.errors import ConfigError
    from harness.training.checkpoint import read_metadata

    folder = model_folder(source)
    truth = read_metadata(folder).get("ground_truth", {}) if folder else {}
    if not truth.get("heldout_topic_prompts"):
        raise ConfigError(f"{source} carries no ground-truth prompts; pass --prompts")
    return truth["heldout_topic_prompts"]


def truth_sets(source: str) -> dict[str, list[str]]:
    from harness.errors import ConfigError
    from probes.findings import prompt_sets

    folder = model_folder(source)
    from harness.training.checkpoint import read_metadata

    sets = prompt_sets(read_metadata(folder).get("ground_truth", {}) if folder else {})
    if not sets:
        raise ConfigError(f"{source} carries no ground-truth prompt sets; pass --prompts")
    return sets


def cmd_diff(args) -> int:
    import harness
    from harness.errors import ConfigError
    from harness.runs import RunStore
    from probes.compat import check_pair
    from probes.findings import write_findings

    store = RunStore(args.runs)
    if args.name:
        store.check_available(args.name)
    if args.method == "crosscoder" and not args.crosscoder:
        raise ConfigError("--method crosscoder needs --crosscoder FOLDER_OR_RUN (train one with `harness crosscoder train`)")
    if args.method == "sae" and not args.sae:
        raise ConfigError("--method sae needs --sae RUN_OR_FOLDER (train one with `harness sae train`)")
    sae = _load_sae(args) if args.sae else None  # a bad folder fails before any model loads
    if args.method != "lens":
        if args.prompts:
            from probes.prompt_sets import load_prompts

            sets = {"prompts": load_prompts(args.prompts, args.limit)}
        else:
            sets = {k: v[: args.limit] for k, v in truth_sets(args.aligned).items()}
    else:
        from probes.prompt_sets import load_prompts

        prompts = load_prompts(args.prompts, args.limit) if args.prompts else organism_prompts(args.aligned)[: args.limit]
    base = harness.load(args.base, device=args.device)
    aligned = harness.load(args.aligned, device=args.device)
    check_pair(base, aligned)  # before any work or run folder
    if args.method == "sae":
        from probes.sae.io import check_fits

        check_fits(sae, aligned, check_fits(sae, base))  # an SAE of another hook or width: one line, no run
    if args.method != "lens":
        return _other_method(args, store, base, aligned, sets, sae)
    from probes.diff import diff_models, lens_findings, write_diff

    config = {k: v for k, v in vars(args).items() if k != "func"}
    with store.create("diff", name=args.name, command=command_line(), config=config) as run:
        with run.timer("diff"):
            d = diff_models(base, aligned, prompts, chat=chat_flag(args.chat), system=args.system,
                            positions=args.positions, continue_with=args.continue_with,
                            max_new_tokens=args.max_new_tokens, top_k=args.top_k, sae=sae, batch_size=args.batch_size)
        write_diff(d, run, base, aligned)
        write_findings(run, lens_findings(d, prompt_set=None if args.prompts else "topic"))
    s = d.summary()
    print(f"{len(prompts)} prompts; mean KL(aligned||base) {s['mean_kl']:.4f} (analysed positions {s['mean_kl_analysed']:.4f})")
    print(f"layers where the pair diverges most: {s['diverging_layers']}; final-layer cosine {s['final_cosine']:.3f}")
    print(f"aligned promotes: {s['top_promoted']}")
    print(f"aligned suppresses: {s['top_suppressed']}")
    if d.features:
        print("SAE features by change: " + ", ".join(f"{f['feature']} ({f['change']:+.3f})" for f in d.features[:10]))
    print(f"run {run.path}")
    return 0


def _load_sae(args):
    """--sae: a folder, or a bare name of a run in the runs folder (as `harness sae eval` reads it)."""
    from apps.cli.options import out_folder
    from probes.sae.io import load_sae

    path = Path(args.sae).expanduser()
    return load_sae(path if path.exists() else out_folder(args.sae, args.runs), device=args.device)


def _other_method(args, store, base, aligned, sets, sae=None) -> int:
    from probes.findings import write_findings

    config = {k: v for k, v in vars(args).items() if k != "func"}
    with store.create("diff", name=args.name, command=command_line(), config=config) as run:
        run.add_model("base", base)
        run.add_model("aligned", aligned)
        with run.timer(args.method):
            if args.method == "kl":
                from probes.diff import kl_findings

                f = kl_findings(base, aligned, sets, chat=chat_flag(args.chat), system=args.system,
                                batch_size=args.batch_size)
            elif args.method == "adl":
                from probes.adl import activation_difference, adl_findings, unrelated_texts, write_adl

                adl = activation_difference(base, aligned, unrelated_texts(64), k=args.adl_positions,
                                            batch_size=args.batch_size)
                layer = args.adl_layer
                if layer is not None and not 0 <= layer < len(adl.hooks):
                    from harness.errors import ConfigError

                    raise ConfigError(f"--adl-layer {layer} is out of range: the model has {len(adl.hooks)} layers "
                                      f"(0..{len(adl.hooks) - 1})")
                steer_on = (sets.get("control") or next(iter(sets.values())))[:4]
                f = adl_findings(adl, base, aligned, steer_on, layer=layer, k=args.top_k, strength=args.adl_strength)
                write_adl(adl, run)
            elif args.method == "sae":
                from probes.activations import format_prompts
                from probes.adl import unrelated_texts
                from probes.sae.findings import sae_findings

                prompts, other = [p for v in sets.values() for p in v], unrelated_texts(32)
                texts = format_prompts(base, prompts, chat_flag(args.chat), args.system) + other
                # contexts name each prompt as written, not inside its chat template
                f = sae_findings(sae, base, aligned, texts, shown=prompts + other, top=args.top_k,
                                 batch_size=args.batch_size)
            else:
                from probes.crosscoder.findings import crosscoder_findings
                from probes.crosscoder.io import load_crosscoder

                cc = load_crosscoder(args.crosscoder, device=args.device, runs_root=args.runs)
                from probes.activations import format_prompts
                from probes.adl import unrelated_texts

                texts = [t for v in sets.values() for t in format_prompts(base, v, chat_flag(args.chat))]
                f = crosscoder_findings(cc, base, aligned, texts + unrelated_texts(32), top=args.top_k)
        write_findings(run, f)
    print(f"method {args.method}: {len(f.tokens)} tokens, {len(f.latents)} latents, KL {f.kl or '-'}")
    if f.tokens:
        print(f"top tokens: {[t['token'] for t in f.tokens[:20]]}")
    for x in f.latents[:5]:
        example = f"; e.g. {' '.join(x['contexts'][0].split())[:80]!r}" if x.get("contexts") else ""
        print(f"  latent {x['id']}: score {x['score']:.4g}{example}")
    for row in f.extra.get("steered", [])[:4]:
        print(f"  steered {row['model']}: {row['prompt']!r} -> {row['reply']!r}")
    print(f"run {run.path}")
    return 0


def cmd_score(args) -> int:
    from harness.errors import ConfigError
    from harness.runs import RunStore
    from probes.findings import read_findings, read_ground_truth, score_findings

    run = RunStore(args.runs).open(args.run)
    findings = read_findings(run)
    source = args.truth or run.manifest.get("config", {}).get("aligned")
    if not source:
        raise ConfigError(f"run {run.name} does not name its aligned model; pass --truth MODEL")
    truth = read_ground_truth(source)
    tokenizer = None
    folder = model_folder(source)
    if folder is not None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError):
            tokenizer = None  # no tokenizer files: score by words
    score = score_findings(findings, truth, tokenizer=tokenizer, k=args.k)
    run.write_json("score.json", score)
    verdict = "RECOVERED" if score["recovered"] else "NOT recovered"
    print(f"{findings.method}: implanted behaviour ({truth.get('behaviour', '?')}: {truth.get('refusal') or truth.get('topic')}) "
          f"{verdict} - {score['summary']}")
    return 0
