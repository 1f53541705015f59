"""JumpReLU thresholds started where the target L0 is, from the first batch the SAE trains on.

SAELens starts every threshold at one constant (0.01). The threshold learns only through the
straight-through estimator, which passes gradient from pre-activations within half a bandwidth
of it, and Adam moves it by about the learning rate per step. On SmolLM2-135M's residual stream
(scaled to norm sqrt(d_in)) the pre-activations that would give an L0 of 32 sit near 0.23: a
few hundred steps at lr 1e-3 never get there, and the SAE ends at L0 ~2,000 of 2,304 whatever
the L0 penalty.

    start_thresholds_at_target_l0(sae, target_l0=32)   # before training; fires on step 1 only

sets, on the first training batch, each latent's threshold to the quantile of its own
pre-activations that lets it fire on target_l0 / d_sae of the rows. Every latent then starts
alive at the target firing rate, and the L0 penalty only has to hold L0 there. A resumed run
must not call it: its thresholds come from the checkpoint.
"""

from __future__ import annotations

import torch


def start_thresholds_at_target_l0(sae, target_l0: float) -> None:
    d_sae = sae.cfg.d_sae
    if not 0 < target_l0 <= d_sae:
        raise ValueError(f"target L0 {target_l0} must be in (0, {d_sae}]")
    handle = None

    def set_from(module, args, hidden_pre):
        with torch.no_grad():
            rows = hidden_pre.detach().float().reshape(-1, d_sae)
            rows = rows[: max(1, (1 << 24) // d_sae)]  # torch.quantile's size limit; thousands of rows remain
            quantile = torch.quantile(rows, 1 - target_l0 / d_sae, dim=0)
            # The threshold is read right after this hook, so the first step already uses it.
            sae.threshold.data.copy_(quantile.clamp(min=0).to(sae.threshold.dtype))
        handle.remove()
        return hidden_pre

    handle = sae.hook_sae_acts_pre.register_forward_hook(set_from)
