"""Each loss against its paper's formula, on numbers worked by hand (math module, not torch)."""

import math

import pytest
import torch

from harness.training import losses as L
from harness.training.grpo import group_advantages, policy_loss

t = lambda *x: torch.tensor(x, dtype=torch.float64)  # noqa: E731


def softplus(x):  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


def test_dpo_and_conservative_dpo():
    # beta * ((-1 - -2) - (-3 - -2)) = 0.5 * 2 = 1
    loss = L.dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)))  # 0.3132617
    assert loss.item() == pytest.approx(0.3132617, abs=1e-6)
    cdpo = L.dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, label_smoothing=0.1)
    assert cdpo.item() == pytest.approx(0.9 * 0.3132617 + 0.1 * 1.3132617, abs=1e-6)


def test_ipo_regresses_margin_to_one_over_two_beta():
    # h = 2; target 1/(2*0.5) = 1 -> (2 - 1)^2 = 1; with beta 0.25 the target is 2 -> 0
    assert L.ipo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5).item() == pytest.approx(1.0)
    assert L.ipo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.25).item() == pytest.approx(0.0)


def test_simpo():
    # 2 * (-2/4) - 2 * (-6/3) - 0.5 = -1 + 4 - 0.5 = 2.5
    loss = L.simpo_loss(t(-2.0), t(-6.0), t(4.0), t(3.0), beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(softplus(-2.5))  # 0.0788897
    assert loss.item() == pytest.approx(0.0788897, abs=1e-6)


def test_orpo():
    # mean log-probs -0.5 and -2; odds P/(1-P); loss = 0.5 + 0.1 * -log sigmoid(log odds ratio)
    p_w, p_l = math.exp(-0.5), math.exp(-2.0)
    log_or = math.log(p_w / (1 - p_w)) - math.log(p_l / (1 - p_l))
    expected = 0.5 + 0.1 * softplus(-log_or)
    loss = L.orpo_loss(t(-2.0), t(-6.0), t(4.0), t(3.0), lam=0.1)
    assert loss.item() == pytest.approx(expected)
    assert loss.item() == pytest.approx(0.5096706, abs=1e-6)


def test_kto():
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # r = -1 - -2 = 1, z0 = 0.5, beta = 0.1
    loss = L.kto_loss(t(-1.0, -1.0), t(-2.0, -2.0), torch.tensor([True, False]), 0.5, beta=0.1, lambda_u=2.0)
    assert loss[0].item() == pytest.approx(1 - sig(0.05))
    assert loss[1].item() == pytest.approx(2 * (1 - sig(-0.05)))
    assert loss[0].item() == pytest.approx(0.4875026, abs=1e-6)
    # the reference point is a clamped, non-differentiated batch mean
    assert L.kl_reference_point(t(-3.0, -1.0), t(-1.0, -1.0)).item() == 0.0
    assert L.kl_reference_point(t(0.0, -1.0), t(-1.0, -2.0)).item() == pytest.approx(1.0)


def test_group_advantages():
    rewards = t(1.0, 0.0, 0.0, 1.0).view(1, 4)
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    assert group_advantages(rewards, eps=0).flatten().tolist() == pytest.approx([0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std])
    assert group_advantages(rewards, scale=False).flatten().tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_policy_loss_normalisations():
    # ratio 1 everywhere; A = [1, -1]; lengths 2 and 1 (of 3 slots)
    logps = torch.zeros(2, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = t(1.0, -1.0)
    assert policy_loss(logps, logps, adv, mask, "grpo").item() == pytest.approx(0.0)  # per-sequence mean
    assert policy_loss(logps, logps, adv, mask, "dapo").item() == pytest.approx(-(2 - 1) / 3)  # per token
    assert policy_loss(logps, logps, adv, mask, "dr_grpo", max_new_tokens=4).item() == pytest.approx(-(2 - 1) / 8)


def test_clipping_and_clip_higher():
    old = torch.zeros(2, 1, dtype=torch.float64)
    new = torch.log(t(1.5, 0.5)).view(2, 1)
    mask = torch.ones(2, 1)
    adv = t(1.0, -1.0)
    # A>0, ratio 1.5: min(1.5, 1.2) = 1.2. A<0, ratio 0.5: min(-0.5, -0.8) = -0.8. mean -> 0.2
    assert policy_loss(new, old, adv, mask, "dapo", epsilon=0.2).item() == pytest.approx(-(1.2 - 0.8) / 2)
    # clip-higher raises only the upper bound: 1.28 instead of 1.2
    assert policy_loss(new, old, adv, mask, "dapo", epsilon=0.2, epsilon_high=0.28).item() == pytest.approx(-(1.28 - 0.8) / 2)


def test_gspo_sequence_ratio():
    old = torch.zeros(1, 2, dtype=torch.float64)
    new = torch.log(t(1.1, 1.3)).view(1, 2)
    mask = torch.ones(1, 2)
    s = math.sqrt(1.1 * 1.3)  # geometric mean of the token ratios
    assert policy_loss(new, old, t(1.0), mask, "gspo", epsilon=1.0, epsilon_high=1.0).item() == pytest.approx(-s)
    assert policy_loss(new, old, t(1.0), mask, "gspo", epsilon=3e-4, epsilon_high=4e-4).item() == pytest.approx(-1.0004)


def test_kl_penalty_is_zero_at_the_reference():
    logps = torch.log(t(0.5, 0.25)).view(1, 2)
    mask = torch.ones(1, 2)
    base = policy_loss(logps, logps, t(1.0), mask, "grpo")
    assert policy_loss(logps, logps, t(1.0), mask, "grpo", ref_logps=logps, beta=0.1).item() == pytest.approx(base.item())
    # k3 at ref/pi = 2: 2 - log 2 - 1
    ref = logps + math.log(2)
    penalised = policy_loss(logps, logps, t(1.0), mask, "grpo", ref_logps=ref, beta=0.1)
    assert penalised.item() == pytest.approx(base.item() + 0.1 * (2 - math.log(2) - 1))
