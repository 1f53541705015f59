"""`harness steer`: generate with a direction added (or ablated) and compare with plain generation.

    harness steer --model smollm2-135m-instruct --direction RUN_OR_FILE --layer 12 --mode ablate \
        --prompts builtin:harmful [--export ./ablated-model]
    harness steer --model M --positive builtin:harmful --negative builtin:harmless --layer 12 \
        --mode add --scale 1.0 --prompts builtin:harmless

The direction comes from a `harness probe` run (or its directions.safetensors), or is computed
on the spot from --positive/--negative. `add` adds scale x the mean difference at the layer's
resid_pre; `ablate` projects it out of the residual stream at every layer (--export also saves
the equivalent weight-orthogonalised checkpoint). Writes generations.jsonl (plain and steered
replies, each judged for refusal by phrase matching) and the rates as metrics.
"""

from __future__ import annotations

from pathlib import Path

from apps.cli.options import command_line, nonnegative_int, positive_int
from apps.cli.probe import add_common, chat_flag, parse_position


def register(subparsers) -> None:
    p = subparsers.add_parser("steer", help="generate with a direction added or ablated",
                              description="Steer generation along a direction (add) or remove it (ablate).")
    p.add_argument("--prompts", required=True, help="prompts to generate from: .txt/.jsonl file or builtin:harmful")
    p.add_argument("--direction", help="a `harness probe` run (name or folder) or a directions .safetensors file")
    p.add_argument("--positive", help="compute the direction: prompts of the positive set")
    p.add_argument("--negative", help="compute the direction: prompts of the negative set")
    p.add_argument("--position", default="-1", help="with --positive/--negative: token position or 'mean'")
    p.add_argument("--layer", type=nonnegative_int, help="the direction's layer (default: the most separating one)")
    p.add_argument("--mode", choices=("add", "ablate"), default="add")
    p.add_argument("--scale", type=float, default=1.0, help="add: multiple of the mean difference added")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)
    p.add_argument("--limit", type=positive_int, help="at most N prompts")
    p.add_argument("--export", metavar="DIR", help="ablate: also save the weight-orthogonalised model here")
    add_common(p)
    p.set_defaults(func=cmd_steer)


def load_directions(spec: str, runs_dir):
    """A directions file, a run folder holding one, or a run name in the runs folder."""
    from harness.errors import ConfigError
    from harness.runs import RunStore
    from probes.directions import Directions

    path = Path(spec)
    if path.is_file():
        return Directions.load(path)
    run = RunStore(runs_dir).open(spec)
    if "directions.safetensors" not in run.artifacts:
        raise ConfigError(f"run {run.name!r} has no directions.safetensors; make one with `harness probe`")
    return Directions.load(run.resolve("directions.safetensors"))


def check_fits(dirs, model) -> None:
    from probes.compat import PairMismatchError

    src, width = dirs.model, dirs.vectors.shape[-1]
    # the vectors' own width decides, whatever the file's metadata claims
    if width != model.cfg.d_model or src.get("d_model") not in (None, model.cfg.d_model):
        raise PairMismatchError(f"the direction was computed on {src.get('name', 'another model')} (d_model {width}); "
                                f"this model ({model.identity.get('name')}) has d_model {model.cfg.d_model}; "
                                "compute one on this model with `harness probe`")


def cmd_steer(args) -> int:
    import harness
    from harness.errors import ConfigError
    from harness.runs import RunStore
    from probes.directions import mean_difference
    from probes.prompt_sets import load_prompts
    from probes.refusal import is_refusal, refusal_rate
    from probes.steering import ablation_hooks, export_orthogonalized, generate, steering_hooks

    if bool(args.direction) == bool(args.positive or args.negative):
        raise ConfigError("give either --direction, or both --positive and --negative")
    if args.positive and not args.negative or args.negative and not args.positive:
        raise ConfigError("--positive and --negative go together")
    if args.export and args.mode != "ablate":
        raise ConfigError("--export saves an ablated model; use it with --mode ablate")
    store = RunStore(args.runs)
    if args.name:
        store.check_available(args.name)
    prompts = load_prompts(args.prompts, args.limit)
    chat = chat_flag(args.chat)
    dirs = load_directions(args.direction, args.runs) if args.direction else None
    model = harness.load(args.model, device=args.device)
    if dirs is not None:
        check_fits(dirs, model)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    with store.create("steer", name=args.name, command=command_line(), config=config) as run:
        run.add_model("model", model)
        if dirs is None:
            with run.timer("direction"):
                dirs = mean_difference(model, load_prompts(args.positive), load_prompts(args.negative), kind="resid_pre",
                                       position=parse_position(args.position), chat=chat, system=args.system,
                                       batch_size=args.batch_size)
        layer = args.layer if args.layer is not None else dirs.best_layer
        vector = dirs.vector(layer)
        if args.mode == "add":
            hooks = steering_hooks(vector, [f"blocks.{layer}.hook_resid_pre"], args.scale)
        else:
            hooks = ablation_hooks(model, vector)
        kw = dict(max_new_tokens=args.max_new_tokens, chat=chat, system=args.system, batch_size=args.batch_size)
        with run.timer("generate"):
            plain = generate(model, prompts, **kw)
            steered = generate(model, prompts, fwd_hooks=hooks, **kw)
        run.write_jsonl("generations.jsonl", [
            {"prompt": p, "plain": a, "steered": b, "plain_refusal": is_refusal(a), "steered_refusal": is_refusal(b)}
            for p, a, b in zip(prompts, plain, steered)])
        tensors, meta = dirs.tensors()
        run.write_tensors("directions.safetensors", tensors, metadata=meta)
        metrics = {"layer": layer, "mode": args.mode, "scale": args.scale, "direction_norm": float(vector.norm()),
                   "refusal_rate_plain": refusal_rate(plain), "refusal_rate_steered": refusal_rate(steered)}
        if args.export:
            folder = export_orthogonalized(model, vector, args.export, metadata={"layer": layer, "run": run.name})
            metrics["exported"] = str(folder)
        run.finish(metrics=metrics)
    print(f"{args.mode} at layer {layer}: refusal rate {metrics['refusal_rate_plain']:.2f} -> "
          f"{metrics['refusal_rate_steered']:.2f} on {len(prompts)} prompts; run {run.path}")
    if args.export:
        print(f"orthogonalised model saved to {metrics['exported']}")
    return 0
