"""Preference-optimisation losses as plain functions of sequence log-probabilities.

Inputs are per-example tensors [batch]: `*_logps` are summed log-probs of the response tokens,
`*_len` their token counts. Each function returns the per-example loss; callers take the mean.
The formulas follow the papers (cited per function) so tests can check them on hand numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(pol_c, pol_r, ref_c, ref_r, beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)).
    With label_smoothing eps > 0 it is conservative DPO (Mitchell 2023): the preference label is
    trusted with probability 1 - eps, so eps of the loss pushes the other way."""
    logits = beta * ((pol_c - ref_c) - (pol_r - ref_r))
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def ipo_loss(pol_c, pol_r, ref_c, ref_r, beta: float = 0.1) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2 tau))^2 with h the difference of log-ratios.
    A squared loss regresses the margin to a fixed target instead of pushing it to infinity."""
    h = (pol_c - ref_c) - (pol_r - ref_r)
    return (h - 1 / (2 * beta)) ** 2


def simpo_loss(pol_c, pol_r, len_c, len_r, beta: float = 2.0, gamma: float = 0.5) -> torch.Tensor:
    """SimPO (Meng et al. 2024, eq. 6): -log sigmoid(beta/|y_w| log p(y_w) - beta/|y_l| log p(y_l) - gamma).
    No reference model; length-normalised rewards and a target margin gamma."""
    return -F.logsigmoid(beta * pol_c / len_c - beta * pol_r / len_r - gamma)


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(P / (1 - P)) for P = exp(mean_logp), computed stably (P < 1 always)."""
    return mean_logp - torch.log(-torch.expm1(mean_logp))


def orpo_loss(pol_c, pol_r, len_c, len_r, lam: float = 0.1) -> torch.Tensor:
    """ORPO (Hong et al. 2024, eqs. 6-7): NLL of the chosen response plus
    lam * -log sigmoid(log odds(y_w) - log odds(y_l)), odds taken on length-averaged likelihoods."""
    mean_c, mean_r = pol_c / len_c, pol_r / len_r
    ratio = -F.logsigmoid(log_odds(mean_c) - log_odds(mean_r))
    return -mean_c + lam * ratio


def kto_loss(pol, ref, desirable, kl_ref_point, beta: float = 0.1, lambda_d: float = 1.0, lambda_u: float = 1.0):
    """KTO (Ethayarajh et al. 2024, eq. 8): per example, with r = log pi/pi_ref and z0 the KL
    reference point (a batch estimate, not differentiated):
        desirable:   lambda_d * (1 - sigmoid(beta * (r - z0)))
        undesirable: lambda_u * (1 - sigmoid(beta * (z0 - r)))"""
    r = pol - ref
    z0 = torch.as_tensor(kl_ref_point, dtype=r.dtype).detach().clamp(min=0)
    good = lambda_d * (1 - torch.sigmoid(beta * (r - z0)))
    bad = lambda_u * (1 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(torch.as_tensor(desirable, dtype=torch.bool), good, bad)


def kl_reference_point(pol_mismatched, ref_mismatched) -> torch.Tensor:
    """KTO's z0: mean log-ratio on mismatched (prompt, other example's completion) pairs, >= 0."""
    return (pol_mismatched - ref_mismatched).mean().detach().clamp(min=0)
