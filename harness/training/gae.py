"""Generalised advantage estimation (Schulman et al. 2016) over completion tokens, and the
masked whitening PPO applies to advantages.

Tensors are [n, T] over completion tokens; `mask` marks each row's real tokens, a prefix of the
row (everything after a completion's end token is padding).
"""

from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both [n, T] and zero on padding.
    delta_t = r_t + gamma V_{t+1} - V_t;  A_t = delta_t + gamma lam A_{t+1};  returns = A + V.
    Past a row's last token V and r are taken as 0, so the last token's delta is r_T - V_T."""
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * m
    return advantages, (advantages + values) * m


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (unbiased variance), zero on padding."""
    m = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = (((x - mean) * m) ** 2).sum() / (m.sum() - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + eps) * m
