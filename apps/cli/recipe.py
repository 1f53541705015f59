"""`harness recipe`: alignment recipes on real models (LoRA-DPO on a preference set we ship), and
RLHF (SFT -> reward model -> PPO) on an organism's base.

    harness recipe run gemma-3-270m-refusal-dpo          # train, save, evaluate base vs aligned
    harness recipe run gemma-3-270m-refusal-dpo --steps 20 --eval-limit 20
    harness recipe run tiny-refusal-rlhf           # --steps sets the PPO steps
    harness recipe list
    harness recipe pairs --check                         # the shipped pairs match their source
"""

from __future__ import annotations

from apps.cli.options import add_run_name, add_runs, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser("recipe", help="align a real model with a shipped recipe and evaluate it",
                              description="Alignment recipes on real models: LoRA-DPO on a shipped preference "
                              "set, a saved checkpoint, and a base-vs-aligned evaluation.")
    sub = p.add_subparsers(dest="recipe_command", metavar="ACTION")
    r = sub.add_parser("run", help="train (or reuse) a recipe's checkpoint and evaluate it",
                       description="Train (or reuse) a recipe's checkpoint, then evaluate base vs aligned. "
                       "A killed run resumes where it stopped.")
    r.add_argument("name", help="recipe name (see `harness recipe list`)")
    r.add_argument("--steps", type=positive_int, default=None,
                   help="DPO steps, or an RLHF recipe's PPO steps (default: the recipe's)")
    r.add_argument("--out", metavar="DIR", help="checkpoint folder (default: <harness cache>/checkpoints/NAME)")
    r.add_argument("--no-eval", dest="evaluate", action="store_false", help="train and save only")
    r.add_argument("--eval-limit", type=positive_int, default=None, help="at most N items per eval task")
    add_runs(r, "runs folder for the eval (default: $INTERP_HARNESS_RUNS or ./runs)")
    add_run_name(r, dest="run_name", help="eval run name (default: NAME-eval)")
    r.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="list the recipes")
    ls.set_defaults(func=cmd_list)
    pairs = sub.add_parser("pairs", help="rebuild the shipped refusal pairs from their source (or --check them)")
    pairs.add_argument("--check", action="store_true", help="exit 1 if the shipped file differs from its source")
    pairs.set_defaults(func=cmd_pairs)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def cmd_run(args) -> int:
    import torch
    from rich.console import Console

    from evals.recipes import run_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    log = lambda line: console.print(line, markup=False, highlight=False)  # noqa: E731
    from harness.errors import ConfigError
    from harness.recipes import RECIPES, RLHF_RECIPES

    if args.name in RLHF_RECIPES:
        return _run_rlhf(args, console, log)
    if args.name not in RECIPES:
        raise ConfigError(f"unknown recipe {args.name!r}; known recipes: {', '.join(sorted({*RECIPES, *RLHF_RECIPES}))}")
    result = run_recipe(args.name, steps=args.steps, out=args.out, evaluate=args.evaluate,
                        eval_limit=args.eval_limit, runs_dir=args.runs, run_name=args.run_name, log=log)
    console.print(f"[bold green]{result['name']}[/]: checkpoint {result['checkpoint']}; held-out preference margin "
                  f"{result['margin_before']:.2f} -> {result['margin_after']:.2f} nats")
    if "eval_run" in result:
        console.print(f"  eval run {result['eval_run']} (open it with `harness app`)")
    return 0


def _run_rlhf(args, console, log) -> int:
    from harness.errors import ConfigError
    from harness.recipes import train_rlhf

    if args.out or args.eval_limit:
        raise ConfigError(f"{args.name} is an RLHF recipe: it saves into the harness cache and evaluates itself; "
                          "--out and --eval-limit apply to the LoRA-DPO recipes")

    result = train_rlhf(args.name, log=log, **({"ppo_steps": args.steps} if args.steps else {}))
    rm, ppo = result["reward_model"]["heldout"], result["ppo"]
    console.print(f"[bold green]{result['name']}[/]: reward model held-out pairwise accuracy {rm['accuracy']:.3f}; "
                  f"held-out reward {ppo['before']['reward']:.2f} -> {ppo['after']['reward']:.2f} at KL "
                  f"{ppo['after']['kl']:.2f} nats to the SFT policy")
    console.print(f"  policy {result['policy']}, reward model {result['reward_model_folder']}")
    return 0


def cmd_list(args) -> int:
    from harness.recipes import RECIPES, RLHF_RECIPES

    for name, spec in sorted(RECIPES.items()):
        print(f"{name}\t{spec.description} (base {spec.base}; LoRA r={spec.lora_r}, {spec.steps} DPO steps)")
    for name, spec in sorted(RLHF_RECIPES.items()):
        print(f"{name}\t{spec.description} (base {spec.organism}-base; {spec.sft_steps} SFT, {spec.rm_steps} "
              f"reward-model, {spec.ppo_steps} PPO steps)")
    return 0


def cmd_pairs(args) -> int:
    from harness.recipes.pairs import main

    return main(["--check"] if args.check else [])
