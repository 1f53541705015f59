"""TransformerLens's own tutorial notebooks, run cell by cell on a harness model and on
TransformerLens's HookedTransformer holding the same weights, with only the load lines changed.

    python benchmarks/tl_tutorials.py NOTEBOOK.ipynb [NOTEBOOK.ipynb ...] [--model smollm2-135m-instruct]

The notebooks are TransformerLens's (demos/*.ipynb in its repository); they are read, not kept
here. Each notebook runs twice, each time in a fresh process and one IPython namespace (so `%`
magics and `display` behave as in Jupyter): once with every model load replaced by the harness
(`harness.load(MODEL)` for `TransformerBridge.boot_transformers`, `HookedLM.from_pretrained(MODEL,
...)` for `HookedTransformer.from_pretrained`), once by TransformerLens's `HookedTransformer` built
offline from the same converted checkpoint (its config from `get_pretrained_model_config(folder)`,
its weights through `load_and_process_state_dict`, as its `from_pretrained` does).
`model.enable_compatibility_mode(...)` becomes `process_weights_(...)` with the same flags on both.

Cells are skipped, identically for both models, when they need the network (pip, datasets,
downloads of other checkpoints) or only render (circuitsvis at top level); circuitsvis is stubbed
so imports and hook functions that would render still run. Plotly figures are built but not shown.
refactor_factored_attn_matrices is dropped on rotary models for both (TransformerLens asserts there).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from unittest import mock

ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false", "GITHUB_ACTIONS": "true"}  # GITHUB_ACTIONS: TL's own CI switches
LOADERS = {"boot_transformers": "boot", "from_pretrained": "pretrained", "from_pretrained_no_processing": "raw"}
NETWORK = ("load_dataset", "download_file_from_hf", "checkpoint_index", "get_checkpoint_labels", "make_pile_data_loader",
           "make_wiki_data_loader", "make_owt_data_loader", "make_code_data_loader", "evals.evaluate(", "hf_hub_download",
           "requests.", "urllib")
RENDER_NAMES = {"cv", "circuitsvis", "attention_heads", "attention_patterns"}
LOAD_TIMEOUT = 900
PROCESS_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                 "refactor_factored_attn_matrices")


# ---------------------------------------------------------------------------------------------- cells
def code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]


def _renders_at_top_level(tree: ast.Module) -> bool:
    """A top-level statement (outside any def/class) that calls circuitsvis."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                f = node.func
                while isinstance(f, ast.Attribute):
                    f = f.value
                if isinstance(f, ast.Name) and f.id in RENDER_NAMES:
                    return True
    return False


class _SwapLoads(ast.NodeTransformer):
    """`X = TransformerBridge.boot_transformers(...)` / `HookedTransformer.from_pretrained(...)` ->
    `X = __tl_load__(kind, **flags)`; `X.enable_compatibility_mode(...)` -> `__tl_compat__(X, ...)`."""

    def __init__(self):
        self.swapped = 0

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in LOADERS and isinstance(f.value, ast.Name) \
                and f.value.id in ("TransformerBridge", "HookedTransformer", "HookedLM"):
            self.swapped += 1
            keep = [k for k in node.keywords if k.arg in PROCESS_FLAGS or k.arg in ("checkpoint_index", "checkpoint_value")]
            return ast.Call(ast.Name("__tl_load__", ast.Load()), [ast.Constant(LOADERS[f.attr])], keep)
        if isinstance(f, ast.Attribute) and f.attr == "enable_compatibility_mode":
            self.swapped += 1
            return ast.Call(ast.Name("__tl_compat__", ast.Load()), [f.value, *node.args], node.keywords)
        return node


def prepare(src: str) -> tuple[str | None, str | None]:
    """(code to run, None), or (its imports alone, why it is skipped), or (None, why)."""
    from IPython.core.inputtransformer2 import TransformerManager

    if any(word in src for word in NETWORK):
        return None, "skipped: network/display"
    code = TransformerManager().transform_cell(src)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code, None  # let IPython report it, on both models alike
    if _renders_at_top_level(tree):  # its imports still run, so later cells see e.g. `cv`
        imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
        return (ast.unparse(ast.Module(imports, [])) if imports else None), "skipped: network/display"
    swap = _SwapLoads()
    tree = ast.fix_missing_locations(swap.visit(tree))
    return ast.unparse(tree), ("load" if swap.swapped else None)


# ---------------------------------------------------------------------------------------------- models
def make_loaders(backend: str, model_name: str):
    import torch

    from harness import zoo

    folder = str(zoo.resolve(model_name))
    rotary = json.loads((Path(folder) / "config.json").read_text()).get("model_type") not in ("gpt2", "gptj", "opt")

    def flags(kw: dict, default: bool) -> dict:
        out = {k: kw.get(k, default) for k in PROCESS_FLAGS[:4]}
        out["refactor_factored_attn_matrices"] = kw.get("refactor_factored_attn_matrices", False)
        return out

    def drop_refactor(model, f: dict) -> dict:
        if model.cfg.positional_embedding_type == "rotary":
            f["refactor_factored_attn_matrices"] = False
        return f

    if backend == "harness":
        import harness
        from harness.models.transformer import HookedLM

        def load(kind: str, **kw):
            if "checkpoint_index" in kw or "checkpoint_value" in kw:
                raise RuntimeError("training checkpoints need the network")
            if kind == "boot":
                return harness.load(model_name)
            f = flags(kw, kind == "pretrained")
            if rotary:
                f["refactor_factored_attn_matrices"] = False
            return HookedLM.from_pretrained(model_name, **f)

        def compat(model, disable_warnings: bool = False, no_processing: bool = False, **kw):
            if not no_processing:
                model.process_weights_(**drop_refactor(model, flags(kw, True)))
            return None
    else:
        from transformer_lens import HookedTransformer, loading
        from transformers import AutoModelForCausalLM, AutoTokenizer

        def load(kind: str, **kw):
            if "checkpoint_index" in kw or "checkpoint_value" in kw:
                raise RuntimeError("training checkpoints need the network")
            f = flags(kw, kind == "pretrained")
            cfg = loading.get_pretrained_model_config(folder, fold_ln=f["fold_ln"], device="cpu")
            f = drop_refactor(types.SimpleNamespace(cfg=cfg), f)
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(folder)
            model = HookedTransformer(cfg, tokenizer=tok)
            state = loading.get_pretrained_state_dict(folder, cfg, hf_model=hf)
            model.load_and_process_state_dict(state, **f)
            return model.to("cpu")

        def compat(model, disable_warnings: bool = False, no_processing: bool = False, **kw):
            if not no_processing:
                f = drop_refactor(model, flags(kw, True))
                f.pop("fold_value_biases")  # HookedTransformer.process_weights_ always folds them
                model.process_weights_(**f)
            return None

    return load, compat


def _circuitsvis_stub() -> None:
    try:
        import circuitsvis  # noqa: F401
        return
    except ImportError:
        pass
    for name in ("circuitsvis", "circuitsvis.attention", "circuitsvis.tokens", "circuitsvis.examples",
                 "circuitsvis.activations", "circuitsvis.topk_tokens", "circuitsvis.topk_samples"):
        module = types.ModuleType(name)
        module.__getattr__ = lambda attr: mock.MagicMock(name=attr)  # type: ignore[attr-defined]
        sys.modules[name] = module
    for name in list(sys.modules):
        if name.startswith("circuitsvis."):
            setattr(sys.modules["circuitsvis"], name.split(".", 1)[1], sys.modules[name])


class CellTimeout(Exception):
    pass


def child(notebook: Path, backend: str, model_name: str, timeout: int, out: Path) -> None:
    os.environ.update(ENV)
    import torch

    torch.set_num_threads(2)
    _circuitsvis_stub()
    import plotly.basedatatypes

    plotly.basedatatypes.BaseFigure.show = lambda *a, **k: None  # built, not rendered
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    load, compat = make_loaders(backend, model_name)
    shell.user_ns.update(__tl_load__=load, __tl_compat__=compat, display=lambda *a, **k: None)

    def on_alarm(signum, frame):
        raise CellTimeout(f"cell ran past {timeout} s")

    signal.signal(signal.SIGALRM, on_alarm)
    results = []
    for index, src in enumerate(code_cells(notebook)):
        code, note = prepare(src)
        if note and note.startswith("skipped"):
            if code is not None:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    shell.run_cell(code, store_history=False)
            results.append({"cell": index, "status": note})
            continue
        if os.environ.get("TL_TUTORIALS_TRACE"):
            print(f"cell {index} ...", file=sys.__stderr__, flush=True)
        sink = io.StringIO()
        start = time.time()
        signal.alarm(LOAD_TIMEOUT if note == "load" else timeout)  # a load cut short would leave a half-processed model
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                res = shell.run_cell(code, store_history=False, silent=False)
        finally:
            signal.alarm(0)
        err = res.error_before_exec or res.error_in_exec
        entry = {"cell": index, "status": "ok" if err is None else "error", "seconds": round(time.time() - start, 1)}
        if err is not None:
            entry["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]
            frames = traceback.extract_tb(err.__traceback__)
            entry["where"] = [f"{Path(fr.filename).name}:{fr.lineno} {fr.name}" for fr in frames[-4:]]
            entry["source"] = src.strip().splitlines()[0][:120] if src.strip() else ""
        results.append(entry)
        out.write_text(json.dumps(results, indent=1))  # as it goes, so a killed run still reports
    out.write_text(json.dumps(results, indent=1))


# ---------------------------------------------------------------------------------------------- parent
def run_both(notebook: Path, backends: list[str], model_name: str, timeout: int, total_timeout: int) -> dict:
    """Each backend in its own process, side by side; every cell's outcome per backend."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {}
        for backend in backends:
            out = Path(tmp) / f"{backend}.json"
            cmd = [sys.executable, __file__, "--child", str(notebook), "--backend", backend, "--model", model_name,
                   "--timeout", str(timeout), "--out", str(out)]
            procs[backend] = (subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out)
        results = {}
        for backend, (proc, out) in procs.items():
            try:
                _, err = proc.communicate(timeout=total_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not out.exists():
                tail = (err or "").strip().splitlines()[-3:]
                raise SystemExit(f"{notebook.name} on {backend} did not finish: {' | '.join(tail)}")
            results[backend] = json.loads(out.read_text())
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    parser.add_argument("--json", type=Path, help="also write every cell's outcome here")
    parser.add_argument("--backends", default="tl,harness")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.backend, args.model, args.timeout, args.out)
    if not args.notebooks:
        parser.error("give at least one notebook (TransformerLens's demos/*.ipynb)")
    backends = args.backends.split(",")
    rows, gaps, everything = [], [], {}
    for nb in args.notebooks:
        if not nb.exists():
            parser.error(f"no notebook at {nb}")
        per = run_both(nb, backends, args.model, args.timeout, 3600)
        everything[nb.name] = per
        if args.json:
            args.json.write_text(json.dumps(everything, indent=1))
        first = per[backends[0]]
        skipped = sum(1 for c in first if c["status"].startswith("skipped"))
        ran = {b: sum(1 for c in cells if c["status"] == "ok") for b, cells in per.items()}
        rows.append((nb.stem, len(first), skipped, *[ran[b] for b in backends]))
        if "tl" in per and "harness" in per:
            for t, h in zip(per["tl"], per["harness"]):
                if t["status"] == "ok" and h["status"] == "error":
                    gaps.append((nb.stem, h["cell"], h.get("source", ""), h["error"], " <- ".join(reversed(h["where"]))))
    head = ("tutorial", "cells", "skipped", *[f"ran on {b}" for b in backends])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    totals = [sum(r[i] for r in rows) for i in range(1, len(head))]
    print("  ".join(str(v).ljust(w) for v, w in zip(("total", *totals), widths)))
    if gaps:
        print("\nran on TransformerLens, failed on harness:")
        for name, cell, src, err, where in gaps:
            print(f"  {name} cell {cell} [{src}]: {err}\n      at {where}")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
