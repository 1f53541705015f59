"""`harness probe`: linear probes and difference-of-means directions between two prompt sets.

    harness probe --model smollm2-135m-instruct --positive builtin:harmful --negative builtin:harmless

Writes a run with probe.jsonl (per-layer train/held-out accuracy), probe.html (the layer sweep),
directions.safetensors (mean differences, usable by `harness steer --direction RUN`) and
directions.jsonl.
"""

from __future__ import annotations

from apps.cli.options import add_run_name, add_runs, command_line, fraction, positive_int


def add_common(p, model_flag: bool = True) -> None:
    """Flags shared by probe, steer and diff."""
    if model_flag:
        p.add_argument("--model", required=True, help="zoo name, model folder, .gguf file or HF id")
    p.add_argument("--chat", choices=("auto", "yes", "no"), default="auto",
                   help="wrap prompts in the chat template (auto: when the tokenizer has one)")
    p.add_argument("--system", type=system_arg,
                   help="system message for chat prompts, or a .json file of chat messages placed before each "
                        "prompt, or builtin:refusal-few-shot")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--device", default="cpu")
    add_runs(p)
    add_run_name(p, help="run name (default: kind and time)")


def system_arg(text: str):
    """A system message, or a conversation: a JSON file of messages or the packaged few-shot one."""
    import json
    from pathlib import Path

    if text == "builtin:refusal-few-shot":
        from probes.refusal import FEW_SHOT

        return FEW_SHOT
    if text.endswith(".json") and Path(text).is_file():
        return json.loads(Path(text).read_text(encoding="utf-8"))
    return text


def chat_flag(value: str):
    return {"auto": "auto", "yes": True, "no": False}[value]


def parse_position(text: str):
    return text if text == "mean" else int(text)


def register(subparsers) -> None:
    p = subparsers.add_parser("probe", help="linear probes and mean-difference directions between two prompt sets",
                              description="Fit a logistic-regression probe per layer (held-out accuracy) and "
                                          "difference-of-means directions between two prompt sets.")
    p.add_argument("--positive", required=True, help="prompts labelled 1: a .txt/.jsonl file or builtin:harmful")
    p.add_argument("--negative", required=True, help="prompts labelled 0: a .txt/.jsonl file or builtin:harmless")
    p.add_argument("--hook", default="resid_post", help="which hook of every block (resid_pre, resid_mid, resid_post, ...)")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--position", default="-1", help="token position within each prompt (-1: last) or 'mean'")
    p.add_argument("--test-frac", type=fraction, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=positive_int, help="at most N prompts per set")
    add_common(p)
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    import torch

    import harness
    from harness.runs import RunStore
    from probes.activations import collect, layer_hooks
    from probes.directions import from_activations, model_summary
    from probes.linear import probe_layers, sweep_figure
    from probes.prompt_sets import load_prompts

    store = RunStore(args.runs)
    if args.name:
        store.check_available(args.name)
    pos, neg = load_prompts(args.positive, args.limit), load_prompts(args.negative, args.limit)
    position = parse_position(args.position)
    model = harness.load(args.model, device=args.device)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    hooks = layer_hooks(model, args.hook, layers)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    with store.create("probe", name=args.name, command=command_line(), config=config, seed=args.seed) as run:
        run.add_model("model", model)
        with run.timer("activations"):
            acts_p = collect(model, pos, hooks, position, chat_flag(args.chat), args.system, args.batch_size)
            acts_n = collect(model, neg, hooks, position, chat_flag(args.chat), args.system, args.batch_size)
        acts = {h: torch.cat([acts_p[h], acts_n[h]]) for h in hooks}
        labels = torch.tensor([1] * len(pos) + [0] * len(neg))
        with run.timer("probes"):
            sweep = probe_layers(acts, labels, args.test_frac, args.seed)
        dirs = from_activations(acts_p, acts_n, position, model_summary(model))
        run.write_jsonl("probe.jsonl", sweep.rows())
        run.write_text("probe.html", sweep_figure(sweep).to_html(include_plotlyjs=True), "html")  # plotly.js embedded: opens offline
        tensors, meta = dirs.tensors()
        run.write_tensors("directions.safetensors", tensors, metadata=meta)
        run.write_jsonl("directions.jsonl", dirs.rows())
        best = sweep.best
        run.finish(metrics={"best_layer": best.layer, "best_test_accuracy": best.test_accuracy, "chance": sweep.chance,
                            "best_separation_layer": dirs.best_layer})
    for r in sweep.results:
        print(f"{r.hook:32s} train {r.train_accuracy:.3f}  held-out {r.test_accuracy:.3f}")
    print(f"chance {sweep.chance:.3f}; best layer {best.layer} ({best.test_accuracy:.3f}); "
          f"most separating direction at layer {dirs.best_layer}; run {run.path}")
    return 0
