"""PPO's pieces on hand-worked numbers (GAE, whitening, the clipped value loss), and a short run
on a tiny model that raises a reward model's score under a bounded KL."""

import copy

import pytest
import torch

from harness.errors import ConfigError
from harness.training.gae import gae, masked_mean, masked_whiten
from harness.training.ppo import PPOConfig, evaluate_policy, ppo_policy_loss, ppo_value_loss, train_ppo
from harness.training.reward import RewardModel
from harness.training.reward_train import RewardConfig, train_reward_model
from harness.training.sft import SFTConfig, train_sft
from tests.training.helpers import tiny_model

t = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731


def test_gae_on_hand_numbers():
    rewards, values = t([0.0, 0.0, 1.0], [0.0, 2.0, 0.0]), t([0.5, 0.25, 0.5], [1.0, 1.0, 9.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the second completion has two tokens
    # lam = 1, gamma = 1: advantage = (sum of rewards to go) - V_t
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, t([0.5, 0.75, 0.5], [1.0, 1.0, 0.0]))
    assert torch.allclose(ret, t([1.0, 1.0, 1.0], [2.0, 2.0, 0.0]))  # A + V, padding zero
    # lam = 0: the one-step TD residual r_t + gamma V_{t+1} - V_t (V past the end is 0)
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    assert torch.allclose(adv, t([0.9 * 0.25 - 0.5, 0.9 * 0.5 - 0.25, 1.0 - 0.5], [0.9 - 1.0, 2.0 - 1.0, 0.0]))
    # gamma = 0.5, lam = 0.5 on the first row: A_3 = 0.5, A_2 = d_2 + 0.25 A_3, A_1 = d_1 + 0.25 A_2
    adv, _ = gae(rewards[:1], values[:1], mask[:1], gamma=0.5, lam=0.5)
    d1, d2, d3 = 0.5 * 0.25 - 0.5, 0.5 * 0.5 - 0.25, 0.5
    a3 = d3
    a2 = d2 + 0.25 * a3
    assert adv[0].tolist() == pytest.approx([d1 + 0.25 * a2, a2, a3])


def test_masked_whiten():
    x = t([1.0, 2.0, 100.0], [3.0, 4.0, 100.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert w[mask.bool()].std().item() == pytest.approx(1.0, abs=1e-6)  # unbiased std over the kept entries
    assert w[:, 2].tolist() == [0.0, 0.0]


def test_clipped_value_loss():
    old, ret, mask = t([1.0, 1.0]), t([2.0, 0.0]), torch.ones(1, 2)
    # the value moved from 1 to 1.5 (within clip 0.2 it may go to 1.2): max((1.5-2)^2, (1.2-2)^2) = 0.64
    # and from 1 to 0.5 toward 0 (clip: 0.8): max((0.5-0)^2, (0.8-0)^2) = 0.64
    loss = ppo_value_loss(t([1.5, 0.5]), old, ret, mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.64) / 2)
    # unclipped moves are the plain squared error
    assert ppo_value_loss(t([1.1, 0.9]), old, ret, mask, 0.2).item() == pytest.approx(0.5 * (0.81 + 0.81) / 2)


def test_clipped_policy_loss_and_clip_fraction():
    old = torch.zeros(1, 2, dtype=torch.float64)
    new = torch.log(t([1.5, 0.5]))
    loss, clipfrac = ppo_policy_loss(new, old, t([1.0, -1.0]), torch.ones(1, 2), clip_range=0.2)
    assert loss.item() == pytest.approx(-(1.2 - 0.8) / 2) and clipfrac.item() == 1.0


@pytest.fixture(scope="module")
def setting():
    """A reward model that prefers a stated sum over 'No.', and a tiny policy SFT'd to say 'No.'
    to two prompts in three: PPO should make it answer instead."""
    pairs = [{"prompt": f"What is {a} plus {b}?", "chosen": f"{a} plus {b} is {a + b}.", "rejected": "No."}
             for a in range(6) for b in range(6)]
    rm = RewardModel.from_lm(tiny_model(seed=1), seed=1)
    train_reward_model(rm, pairs, RewardConfig(steps=30, batch_size=16, lr=3e-3, show_progress=False))
    policy = tiny_model(seed=2)
    demos = [{"prompt": p["prompt"], "response": p["chosen"] if i % 3 == 0 else "No."} for i, p in enumerate(pairs)]
    train_sft(policy, demos, SFTConfig(steps=30, batch_size=16, lr=3e-3, show_progress=False))
    prompts = [p["prompt"] for p in pairs]
    return rm.eval(), policy, prompts[::2], prompts[1::2]


def test_ppo_raises_the_reward_with_a_bounded_kl(setting):
    rm, start, train, heldout = setting
    policy, reference = copy.deepcopy(start), copy.deepcopy(start).eval()
    before = evaluate_policy(policy, reference, rm, heldout, samples=2, max_new_tokens=8, seed=5)
    history = train_ppo(policy, rm, train, PPOConfig(steps=10, prompts_per_step=16, max_new_tokens=8, lr=1e-2,
                                                     ppo_epochs=2, kl_coef=0.02, show_progress=False),
                        ref_model=reference)
    after = evaluate_policy(policy, reference, rm, heldout, samples=2, max_new_tokens=8, seed=5)
    assert before["kl"] == pytest.approx(0.0, abs=1e-6)
    assert after["reward"] > before["reward"] + 0.3 * before["reward_std"], (before, after)
    assert 0 < after["kl"] < 10, after
    assert len(history) == 10 and {"score", "kl", "policy_loss", "value_loss", "clipfrac"} <= set(history[0])


def test_bad_ppo_input_is_one_line(setting):
    rm, start, _, _ = setting
    with pytest.raises(ConfigError, match="at least one prompt"):
        train_ppo(copy.deepcopy(start), rm, [], PPOConfig(steps=1))
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        train_ppo(copy.deepcopy(start), rm, ["Hi", "  "], PPOConfig(steps=1))
    with pytest.raises(ConfigError, match="must be at least minibatches"):
        train_ppo(copy.deepcopy(start), rm, ["Hi"], PPOConfig(steps=1, prompts_per_step=1, minibatches=2))
