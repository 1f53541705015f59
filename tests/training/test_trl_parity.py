"""The harness's losses equal TRL 1.16's on the same inputs (float64, within 1e-5). TRL's own
loss methods compute the reference (tests/training/trl_reference.py says how they are called).

Where the two define a loss differently, the test says how and checks the mapping:
  - IPO: TRL's DPOTrainer divides each log-ratio by its completion's length (a choice it
    confirmed with the IPO authors); harness.ipo_loss takes whatever log-ratios it is given
    (train_preference gives sums), so it matches DPOTrainer on per-token means and CPOTrainer's
    unnormalised IPO on sums.
  - conservative DPO: TRL 1.16's DPOTrainer has no label-smoothed sigmoid loss (label_smoothing
    now means Robust DPO); CPOTrainer's sigmoid loss is the same formula, fed the log-ratios.
  - ORPO: TRL's NLL term covers prompt and response tokens; the paper's (and ours) the response
    only. The odds-ratio term, where the method lives, is compared.
  - PPO: TRL 1.16 has no PPOTrainer. Its GRPOTrainer takes per-token advantages [B, T]; with
    loss_type="bnpo" (a mean over all completion tokens) that is PPO's clipped objective.
"""

import pytest
import torch

from tests.training.trl_reference import LogProbModel, trainer, trl  # noqa: F401 - trl skips without TRL

from harness.training import losses as L
from harness.training.grpo import policy_loss
from harness.training.ppo import ppo_policy_loss
from harness.training.reward_train import reward_loss

TOL = 1e-5
B, T = 5, 7  # pairs, completion tokens


def completion_mask(n, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    return (torch.arange(T)[None] < lengths[:, None]).long()


def per_token_logps(mask, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return -scale * torch.rand(mask.shape, generator=g, dtype=torch.float64) * mask


def paired_batch(seed=0):
    """Chosen rows then rejected rows, as TRL's DPO collator lays them out."""
    mask = completion_mask(2 * B, seed)
    logps = per_token_logps(mask, seed + 1)
    ref = per_token_logps(mask, seed + 2)
    ids = torch.arange(2 * B * (T + 1)).view(2 * B, T + 1)  # one prompt token, then the completion
    full_mask = torch.cat([torch.zeros(2 * B, 1, dtype=torch.long), mask], dim=1)
    sums, ref_sums, lengths = logps.sum(-1), ref.sum(-1), mask.sum(-1).double()
    return {"ids": ids, "mask": full_mask, "logps": logps, "sums": sums, "ref": ref_sums, "len": lengths}


def trl_dpo(batch, loss_type, beta, **extra):
    from trl.trainer.dpo_trainer import DPOTrainer

    obj = trainer(DPOTrainer, precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl",
                  f_alpha_divergence_coef=1.0, loss_types=[loss_type], loss_weights=[1.0], beta=beta,
                  label_smoothing=0.0, use_weighting=False, args=None, **extra)
    inputs = {"input_ids": batch["ids"], "attention_mask": torch.ones_like(batch["ids"]),
              "completion_mask": batch["mask"], "ref_chosen_logps": batch["ref"][:B],
              "ref_rejected_logps": batch["ref"][B:]}
    return DPOTrainer._compute_loss(obj, LogProbModel({batch["ids"]: batch["logps"]}), inputs, return_outputs=False)


def halves(x):
    return x[:B], x[B:]


def cpo(loss_type, beta, chosen, rejected, label_smoothing=0.0, simpo_gamma=0.5):
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    obj = trainer(CPOTrainer, alpha=0.0, loss_type=loss_type, beta=beta, label_smoothing=label_smoothing,
                  simpo_gamma=simpo_gamma)
    return CPOTrainer.cpo_loss(obj, chosen, rejected)[0]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo(beta):
    b = paired_batch()
    (pc, pr), (rc, rr) = halves(b["sums"]), halves(b["ref"])
    ours = L.dpo_loss(pc, pr, rc, rr, beta=beta).mean()
    assert abs(ours.item() - trl_dpo(b, "sigmoid", beta).item()) < TOL


def test_conservative_dpo_is_cpo_sigmoid_on_log_ratios():
    b = paired_batch(3)
    (pc, pr), (rc, rr) = halves(b["sums"]), halves(b["ref"])
    ours = L.dpo_loss(pc, pr, rc, rr, beta=0.3, label_smoothing=0.15)
    theirs = cpo("sigmoid", 0.3, pc - rc, pr - rr, label_smoothing=0.15)
    assert (ours - theirs).abs().max().item() < TOL


def test_ipo_per_token_means_match_dpo_trainer_and_sums_match_cpo():
    b = paired_batch(5)
    (pc, pr), (rc, rr), (lc, lr) = halves(b["sums"]), halves(b["ref"]), halves(b["len"])
    normalised = L.ipo_loss(pc / lc, pr / lr, rc / lc, rr / lr, beta=0.2).mean()
    assert abs(normalised.item() - trl_dpo(b, "ipo", 0.2).item()) < TOL
    summed = L.ipo_loss(pc, pr, rc, rr, beta=0.2)
    assert (summed - cpo("ipo", 0.2, pc - rc, pr - rr)).abs().max().item() < TOL


@pytest.mark.parametrize("beta,gamma", [(2.0, 0.5), (2.5, 1.4)])
def test_simpo(beta, gamma):
    b = paired_batch(7)
    (pc, pr), (lc, lr) = halves(b["sums"]), halves(b["len"])
    ours = L.simpo_loss(pc, pr, lc, lr, beta=beta, gamma=gamma)
    theirs = cpo("simpo", beta, pc / lc, pr / lr, simpo_gamma=gamma)  # CPO's SimPO reads mean log-probs
    assert (ours - theirs).abs().max().item() < TOL


def test_orpo_odds_ratio_term():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    b = paired_batch(9)
    (pc, pr), (lc, lr) = halves(b["sums"]), halves(b["len"])
    lam = 0.25
    ours = L.orpo_loss(pc, pr, lc, lr, lam=lam) - (-(pc / lc))  # minus the NLL: the odds-ratio term
    # TRL's total is nll - mean(losses), so its odds-ratio term per pair is -losses
    losses = ORPOTrainer.odds_ratio_loss(trainer(ORPOTrainer, beta=lam), pc / lc, pr / lr)[0]
    assert (ours - (-losses)).abs().max().item() < TOL


def test_kto():
    from trl.trainer.kto_trainer import KTOTrainer

    n = 2 * B
    mask = completion_mask(n, 11)
    kl_mask = completion_mask(n, 12)
    logps, kl_logps = per_token_logps(mask, 13), per_token_logps(kl_mask, 14)
    ref, ref_kl = per_token_logps(mask, 15).sum(-1), per_token_logps(kl_mask, 16).sum(-1)
    label = torch.tensor([True, False, True, True, False, False, True, False, False, True])
    ids = torch.arange(n * (T + 1)).view(n, T + 1)
    kl_ids = ids + 10_000  # other storage: the stand-in model tells the two forwards apart
    pad = lambda m: torch.cat([torch.zeros(n, 1, dtype=torch.long), m], dim=1)  # noqa: E731
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": pad(mask),
              "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(ids), "KL_completion_mask": pad(kl_mask),
              "label": label, "ref_logps": ref, "ref_KL_logps": ref_kl}
    beta, wd, wu = 0.2, 1.0, 1.33
    obj = trainer(KTOTrainer, calculate_KL=True, precompute_ref_logps=True, loss_type="kto", beta=beta,
                  desirable_weight=wd, undesirable_weight=wu, args=None)
    theirs = KTOTrainer._compute_loss(obj, LogProbModel({ids: logps, kl_ids: kl_logps}), inputs, return_outputs=False)
    z0 = L.kl_reference_point(kl_logps.sum(-1), ref_kl)
    ours = L.kto_loss(logps.sum(-1), ref, label, z0, beta=beta, lambda_d=wd, lambda_u=wu).mean()
    assert abs(ours.item() - theirs.item()) < TOL


def grpo_inputs(seed, per_token_advantages=False):
    n = 2 * B
    mask = completion_mask(n, seed)
    logps = per_token_logps(mask, seed + 1, scale=2.0)
    g = torch.Generator().manual_seed(seed + 2)
    # old and reference log-probs a little away from the current ones, so ratios are clipped
    old = (logps + 0.4 * torch.randn(mask.shape, generator=g, dtype=torch.float64)) * mask
    ref = (logps + 0.3 * torch.randn(mask.shape, generator=g, dtype=torch.float64)) * mask
    shape = (n, T) if per_token_advantages else (n,)
    adv = torch.randn(shape, generator=g, dtype=torch.float64)
    return logps, old, ref, adv, mask


def trl_grpo(logps, old, ref, adv, mask, loss_type, eps_low, eps_high, beta, level="token", max_len=T):
    from trl.trainer.grpo_trainer import GRPOTrainer

    obj = trainer(GRPOTrainer, loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, beta=beta,
                  importance_sampling_level=level, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
                  use_vllm=False, vllm_importance_sampling_correction=False, max_completion_length=max_len,
                  current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False,
                  args=type("Args", (), {"use_bias_correction_kl": False, "delta": None, "steps_per_generation": 1}))
    obj._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
    n = logps.shape[0]
    inputs = {"prompt_ids": torch.zeros(n, 1, dtype=torch.long), "prompt_mask": torch.ones(n, 1, dtype=torch.long),
              "completion_ids": torch.zeros(n, T, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    return GRPOTrainer._compute_loss(obj, None, inputs)


# (ours, TRL's loss_type, TRL's importance-sampling level, epsilon, epsilon_high)
GRPO_VARIANTS = [
    ("grpo", "grpo", "token", 0.2, None),
    ("dr_grpo", "dr_grpo", "token", 0.2, None),
    ("dapo", "dapo", "token", 0.2, 0.28),
    ("gspo", "grpo", "sequence", 3e-4, 4e-4),  # GSPO is GRPO's loss with one ratio per sequence
    ("gspo", "grpo", "sequence", 0.1, 0.15),  # a wider band, so not every ratio is clipped
]


@pytest.mark.parametrize("ours,theirs,level,eps,eps_high", GRPO_VARIANTS)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_variants(ours, theirs, level, eps, eps_high, beta):
    logps, old, ref, adv, mask = grpo_inputs(21)
    mine = policy_loss(logps, old, adv, mask, ours, eps, eps_high, ref, beta, max_new_tokens=T)
    reference = trl_grpo(logps, old, ref, adv, mask, theirs, eps, eps if eps_high is None else eps_high, beta, level)
    assert abs(mine.item() - reference.item()) < TOL


@pytest.mark.parametrize("clip", [0.1, 0.2])
def test_ppo_clipped_objective(clip):
    logps, old, _, adv, mask = grpo_inputs(31, per_token_advantages=True)
    mine, _ = ppo_policy_loss(logps, old, adv, mask, clip)
    reference = trl_grpo(logps, old, None, adv, mask, "bnpo", clip, clip, beta=0.0)
    assert abs(mine.item() - reference.item()) < TOL


@pytest.mark.parametrize("margin,center", [(False, None), (True, None), (False, 0.01), (True, 0.05)])
def test_reward_model_loss(margin, center):
    from trl.trainer.reward_trainer import RewardTrainer

    g = torch.Generator().manual_seed(41)
    rewards = torch.randn(2 * B, 1, generator=g, dtype=torch.float64) * 2
    margins = torch.rand(B, generator=g, dtype=torch.float64) if margin else None
    inputs = {"attention_mask": torch.ones(2 * B, 3, dtype=torch.long)}
    if margin:
        inputs["margin"] = margins
    obj = trainer(RewardTrainer, args=type("Args", (), {"center_rewards_coefficient": center}))
    theirs = RewardTrainer.compute_loss(obj, lambda **kw: type("Out", (), {"logits": rewards}), inputs)
    ours = reward_loss(rewards[:B, 0], rewards[B:, 0], margins, center)
    assert abs(ours.item() - theirs.item()) < TOL
