"""`harness diff`: where and how an aligned model differs from its base, on the same prompts.

    harness diff --base tiny-refusal-base --aligned tiny-refusal-aligned
    harness diff --base B --aligned A --prompts prompts.txt --continue-with aligned --sae ./my-sae

Without --prompts, a model organism's held-out topic prompts are read from the aligned
checkpoint's ground truth. Writes a run with layers.jsonl (cosine, norm ratio, CKA, lens KL per
layer), lens.jsonl (promoted/suppressed tokens per layer), kl.safetensors (per-position KL),
features.jsonl (with --sae) and summary.json.
"""

from __future__ import annotations

from pathlib import Path

from apps.probe_cmd import add_common, chat_flag, command_line


def register(subparsers) -> None:
    p = subparsers.add_parser("diff", help="diff an aligned model against its base on the same prompts",
                              description="Per-layer activation differences, a diff lens, per-position KL and "
                                          "(with --sae) SAE features ranked by change.")
    p.add_argument("--base", required=True, help="the base model: zoo name, folder, .gguf or HF id")
    p.add_argument("--aligned", required=True, help="the aligned model (same architecture and tokenizer)")
    p.add_argument("--prompts", help=".txt/.jsonl file or builtin:harmful (default: an organism's ground-truth prompts)")
    p.add_argument("--limit", type=int, help="at most N prompts")
    p.add_argument("--positions", choices=("last", "response", "all"),
                   help="positions the lens averages over (default: response with --continue-with, else last)")
    p.add_argument("--continue-with", choices=("aligned", "base"), help="append this model's greedy continuation")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--sae", help="a SAELens SAE folder (SAE.load_from_disk) to rank features by change")
    p.add_argument("--top-k", type=int, default=25)
    add_common(p, model_flag=False)
    p.set_defaults(func=cmd_diff)


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


def cmd_diff(args) -> int:
    import harness
    from harness.runs import RunStore
    from probes.compat import check_pair
    from probes.diff import diff_models, write_diff
    from probes.prompt_sets import load_prompts

    store = RunStore(args.runs)
    if args.name:
        store.check_available(args.name)
    prompts = load_prompts(args.prompts, args.limit) if args.prompts else organism_prompts(args.aligned)[: args.limit]
    base = harness.load(args.base, device=args.device)
    aligned = harness.load(args.aligned, device=args.device)
    check_pair(base, aligned)  # before any work or run folder
    sae = None
    if args.sae:
        from sae_lens import SAE

        sae = SAE.load_from_disk(args.sae, device=args.device)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    with store.create("diff", name=args.name, command=command_line(), config=config) as run:
        with run.timer("diff"):
            d = diff_models(base, aligned, prompts, chat=chat_flag(args.chat), system=args.system,
                            positions=args.positions, continue_with=args.continue_with,
                            max_new_tokens=args.max_new_tokens, top_k=args.top_k, sae=sae, batch_size=args.batch_size)
        write_diff(d, run, base, aligned)
    s = d.summary()
    print(f"{len(prompts)} prompts; mean KL(aligned||base) {s['mean_kl']:.4f} (analysed positions {s['mean_kl_analysed']:.4f})")
    print(f"layers where the pair diverges most: {s['diverging_layers']}; final-layer cosine {s['final_cosine']:.3f}")
    print(f"aligned promotes: {s['top_promoted']}")
    print(f"aligned suppresses: {s['top_suppressed']}")
    if d.features:
        print("SAE features by change: " + ", ".join(f"{f['feature']} ({f['change']:+.3f})" for f in d.features[:10]))
    print(f"run {run.path}")
    return 0
