"""A recipe end to end: train (or reuse) its checkpoint, then evaluate base vs aligned on the
recipe's suite with the same chat template. Training lives in harness.recipes; the evaluation is
the benchmark runner's, so the two meet here, one layer up.

    result = run_recipe("gemma-3-270m-refusal-dpo")   # ~20 min on a 2-core CPU
    result["checkpoint"]   # <cache>/checkpoints/gemma-3-270m-refusal-dpo (merged weights, loadable)
    result["eval_run"]     # runs/<name>: base vs aligned on the alignment suite, with CIs

A killed run resumes: training from its saved state, the eval run where it stopped.
"""

from __future__ import annotations

import time

from evals.results import EvalResults
from evals.runner import run_eval
from harness.errors import ConfigError
from harness.recipes import RecipeSpec, train_recipe
from harness.runs import RunStore


def run_recipe(recipe: str | RecipeSpec, *, steps: int | None = None, cache_dir=None, out=None,
               evaluate: bool = True, eval_limit: int | None = None, runs_dir=None, run_name: str | None = None,
               eval_batch_size: int = 16, show_progress: bool = True, log=print) -> dict:
    """train_recipe, then (unless evaluate=False) the eval run; adds eval_run and comparison."""
    result = train_recipe(recipe, steps=steps, cache_dir=cache_dir, out=out, show_progress=show_progress, log=log)
    base, aligned = result.pop("base_model"), result.pop("aligned_model")
    spec = result["spec"]
    if evaluate:
        name = run_name or f"{spec.name}-eval"
        t0 = time.perf_counter()
        log(f"[{spec.name}] evaluating base vs aligned on the {spec.eval_suite!r} suite -> run {name}")
        run = _finished_run(runs_dir, name, aligned) or run_eval(
            {"base": base, "aligned": aligned}, spec.eval_suite, runs_dir=runs_dir, name=name, limit=eval_limit,
            batch_size=eval_batch_size, command=["harness", "recipe", "run", spec.name])
        result["timings"]["eval_s"] = time.perf_counter() - t0
        result["timings"]["total_s"] += result["timings"]["eval_s"]
        result["eval_run"] = run.path
        result["comparison"] = EvalResults.of(run).comparison()["rows"]
    return result


def _finished_run(runs_dir, name: str, aligned):
    """The complete eval run called `name`, if there is one and it evaluated these aligned weights."""
    from harness.identity import weights_sha256

    store = RunStore(runs_dir)
    if not store.path_of(name).is_dir():
        return None
    run = store.open(name)
    if run.status != "complete":
        return None  # run_eval resumes it
    evaluated = (run.manifest.get("models") or {}).get("aligned", {}).get("weights_sha256")
    if evaluated != weights_sha256(aligned):
        raise ConfigError(f"eval run {name!r} in {store.root} evaluated other aligned weights than this checkpoint; "
                          "pass another run name (--name) or remove that run")
    return run
