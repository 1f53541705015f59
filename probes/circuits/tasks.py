"""Named tasks: a prompt set and its metric, ready for the patching tools (used by the CLI and
the benchmark).

    prompts, metric = task(model, "ioi", n=8)
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from probes.circuits import prompts as P
from probes.circuits.core import Metric, logit_diff

TASKS = ("ioi", "induction", "greater-than", "factual")


def induction_metric(prompts: P.PromptSet) -> Metric:
    """Mean log-probability of the repeated tokens in the second copy (an induction head's job)."""
    length, tokens = prompts.extra["length"], prompts.clean

    def metric(logits: torch.Tensor) -> torch.Tensor:
        # Logits at position t predict token t + 1; the second copy's tokens 2..length are predictable.
        start = tokens.shape[1] - length
        preds = logits[:, start:-1].float().log_softmax(-1)
        targets = tokens[:, start + 1 :].to(preds.device)
        return preds.gather(-1, targets[..., None]).mean()

    return metric


def task(model, name: str, n: int = 8, seed: int = 0, length: int = 10) -> tuple[P.PromptSet, Metric]:
    if name == "ioi":
        ps = P.ioi(model, n=n, seed=seed)
        return ps, logit_diff(ps.answers)
    if name == "induction":
        ps = P.repeated_tokens(model, n=n, length=length, seed=seed)
        return ps, induction_metric(ps)
    if name == "greater-than":
        ps = P.greater_than(model, n=n, seed=seed)
        return ps, P.greater_than_metric(ps.extra["greater"])
    if name == "factual":
        ps = P.factual_recall(model)
        return ps, logit_diff(ps.answers)
    raise ConfigError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
