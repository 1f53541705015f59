"""The one answer to "where does this model run": the device of its first parameter (CPU for a
model without parameters). Works for harness models and any torch module handed in."""

from __future__ import annotations

import torch


def device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
