"""`harness-lm-eval`: lm-eval's own command line, with the harness model registered.

    harness-lm-eval --model harness --model_args pretrained=smollm2-135m-instruct,dtype=float32,batch_size=8 \\
        --tasks harness_knowledge --include_path ./my_tasks

Every option is lm-eval's (`lm_eval --help`); only `--model harness` is added. Why a wrapper:
lm-eval 0.4.13 fills its model registry from its own table (`lm_eval.models.MODEL_MAPPING`) and
from classes that call `register_model` when imported; its registry accepts entry-point
placeholders, but nothing in it reads installed entry points, so a plugin package cannot make the
plain `lm_eval` command know a new model without patching lm-eval or adding a startup hook to
every Python process. This wrapper registers every model declared in the `lm_eval.models`
entry-point group (ours is `harness = evals.lm_adapter:HookedLMEval`, declared in pyproject.toml,
so a later lm-eval that does discover plugins finds it too) and then runs lm-eval's CLI unchanged.
In Python, importing `evals.lm_adapter` is enough: `simple_evaluate(model="harness", ...)`.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys

GROUP = "lm_eval.models"


def register_entry_points() -> list[str]:
    """Register the models of the `lm_eval.models` entry-point group; returns their names."""
    import lm_eval.models  # noqa: F401  lm-eval's own models first (it fills an empty registry only)
    from lm_eval.api.registry import model_registry

    names = []
    for ep in md.entry_points(group=GROUP):
        if ep.name not in model_registry:
            # A "module:attr" string is lm-eval's lazy placeholder: imported on first use only.
            model_registry.register(ep.name, target=ep.value.replace(" ", ""))
        names.append(ep.name)
    return names


def main(argv: list[str] | None = None) -> None:
    for key, value in {"TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    register_entry_points()
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
