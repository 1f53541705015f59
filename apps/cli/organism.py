"""`harness organism`: build the model organisms (tiny base/aligned pairs with a known difference).

    harness organism build tiny-refusal            # -> <cache>/checkpoints/tiny-refusal-{base,aligned}
    harness organism build tiny-refusal --out DIR --seed 1
    harness organism build tiny-backdoor           # on tiny-refusal's base (pretrained first if missing)
    harness organism list
"""

from __future__ import annotations

from apps.cli.options import positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser("organism", help="build model organisms (base/aligned pairs with a known difference)",
                              description="Build model organisms: a tiny base model and an aligned copy with an "
                              "implanted behaviour, saved as checkpoints with the ground truth.")
    sub = p.add_subparsers(dest="organism_command", metavar="ACTION")
    b = sub.add_parser("build", help="train and save an organism pair", description="Train and save an organism pair.")
    b.add_argument("name", nargs="?", default="tiny-refusal", help="organism name (default: tiny-refusal)")
    b.add_argument("--out", metavar="DIR", help="folder for the checkpoints (default: <harness cache>/checkpoints)")
    b.add_argument("--seed", type=int, default=None, help="random seed (default: the organism's own, 0)")
    b.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice; 1 on a busy machine)")
    b.add_argument("--fresh", action="store_true", help="retrain even if a matching build is saved (an organism "
                   "that shares another's base retrains only its fine-tune)")
    b.set_defaults(func=cmd_build)
    ls = sub.add_parser("list", help="list the organisms that can be built")
    ls.set_defaults(func=cmd_list)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def cmd_build(args) -> int:
    from rich.console import Console

    import torch

    from harness.organisms import build_organism, get_spec
    from harness.organisms.build import headline
    from harness.runs import check_writable

    if args.out:
        check_writable(args.out, "another --out")  # before minutes of training, not after
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    result = build_organism(args.name, out=args.out, seed=args.seed, resume=not args.fresh,
                            log=lambda line: console.print(line, markup=False, highlight=False))
    console.print(f"[bold green]built {result['name']}[/]: base {result['base']}, aligned {result['aligned']}")
    console.print(f"  {headline(get_spec(args.name), result['measured'])}; build took {result['timings']['total_s']:.0f} s",
                  markup=False, highlight=False)
    return 0


def cmd_list(args) -> int:
    from harness.organisms import ORGANISMS

    for name, spec in sorted(ORGANISMS.items()):
        base = f"base of {spec.base_of}" if spec.base_of else "own base"
        print(f"{name}\t{spec.description} (kind: {spec.kind}; {base}; d_model {spec.d_model}, {spec.n_layers} layers)")
    return 0
