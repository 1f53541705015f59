"""The benchmark runner: an lm-eval adapter for HookedLM, packaged suites, paired comparison.

    from evals import run_eval
    run = run_eval({"base": "smollm2-135m-instruct", "aligned": "./aligned"}, "default")

Names are imported on first use, so `import evals` stays light (lm-eval is slow to import).
"""

_EXPORTS = {
    "HookedLMEval": "evals.lm_adapter",
    "run_eval": "evals.runner",
    "resolve_suite": "evals.suites",
    "SUITES": "evals.suites",
    "compare_items": "evals.compare",
    "next_token_kl": "evals.compare",
    "write_report": "evals.report",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evals' has no attribute {name!r}")
