"""TRL 1.16 trainers as loss references, without their models, data or Accelerate.

Each TRL trainer computes its loss in a method of the trainer (`DPOTrainer._compute_loss`,
`KTOTrainer._compute_loss`, `GRPOTrainer._compute_loss`, `RewardTrainer.compute_loss`,
`CPOTrainer.cpo_loss`, `ORPOTrainer.odds_ratio_loss`). We call those methods on a trainer made
with `__new__` (no __init__: that would need a model, a dataset and a process group) holding only
the attributes the method reads, and give them a stand-in model whose forward returns the
per-token log-probs we chose, in the shape TRL's fused LM head returns them.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is the test reference (pip install -e '.[dev]')")


class Accelerator:
    """One process: gathers and reductions are the identity."""

    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    def gather_for_metrics(self, x):
        return x

    gather = gather_for_metrics

    def reduce(self, x, reduction="sum"):
        return x

    def unwrap_model(self, model):
        return model

    def autocast(self):
        return contextlib.nullcontext()


class LogProbModel:
    """Returns fixed per-token log-probs for each input_ids tensor it is given (keyed by storage),
    as TRL's fused LM head would: zero where the label is masked."""

    training = False

    def __init__(self, per_token: dict):
        self.per_token = {ids.data_ptr(): logps for ids, logps in per_token.items()}

    def __call__(self, input_ids=None, **kwargs):
        logps = self.per_token[input_ids.data_ptr()]
        zeros = torch.zeros_like(logps)
        return SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool(),
                               log_sum_sq_probs=zeros, aux_loss=None)


def trainer(cls, **attributes):
    """A TRL trainer object with only `attributes` (and what every loss method logs into)."""
    obj = cls.__new__(cls)
    defaults = dict(accelerator=Accelerator(), _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                    _total_train_tokens=0, _tp_size=1, aux_loss_enabled=False, model=SimpleNamespace(training=False))
    obj.__dict__.update({**defaults, **attributes})
    return obj
