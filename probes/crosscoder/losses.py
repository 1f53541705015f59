"""Crosscoder training losses.

L1 (Anthropic 2024): squared error summed over models and layers, plus
    l1_coeff * sum_j f_j * sum_m ||W_dec[j, m]||
so a latent pays for each model it writes to; a latent that writes to one model only is cheap.

BatchTopK (Minder et al. 2025): squared error only (sparsity is the top-k itself), plus the
aux-k loss of Gao et al. 2024: the latents dead for `dead_after` steps try to model the
residual error with their own top aux_k activations, which gives them gradient again.
"""

from __future__ import annotations

import torch

from probes.crosscoder.model import Crosscoder


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    return (recon - x).pow(2).flatten(1).sum(-1).mean()


def l1_penalty(cc: Crosscoder, f: torch.Tensor) -> torch.Tensor:
    return (f * cc.decoder_norms().sum(-1)).sum(-1).mean()


def aux_k_loss(cc: Crosscoder, x: torch.Tensor, recon: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """Normalised MSE of the dead latents' top-aux_k reconstruction of the residual x - recon."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return x.new_zeros(())
    aux_k = min(cc.cfg.aux_k or max(1, cc.cfg.d_in // 2), n_dead)
    residual = (x - recon).detach()
    pre = torch.relu(cc.pre_acts(x))[:, dead]
    top = pre.topk(aux_k, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    guess = torch.einsum("bh,hmld->bmld", f, cc.W_dec[dead])
    err = (guess - residual).pow(2).flatten(1).sum(-1).mean()
    return err / residual.pow(2).flatten(1).sum(-1).mean().clamp(min=1e-12)


def training_loss(cc: Crosscoder, x: torch.Tensor, dead: torch.Tensor, l1_scale: float = 1.0) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """(loss, metrics, latents) of one batch of scaled input."""
    recon, f = cc(x)
    mse = reconstruction_loss(x, recon)
    metrics = {"mse": float(mse.detach())}
    if cc.cfg.loss == "l1":
        sparsity = l1_penalty(cc, f)
        loss = mse + l1_scale * cc.cfg.l1_coeff * sparsity
        metrics["l1"] = float(sparsity.detach())
    else:
        aux = aux_k_loss(cc, x, recon, dead)
        loss = mse + cc.cfg.aux_coeff * aux
        metrics["aux"] = float(aux.detach())
    metrics["loss"] = float(loss.detach())
    metrics["l0"] = float((f > 0).float().sum(-1).mean())
    return loss, metrics, f
