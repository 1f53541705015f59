"""PPO against a reward model: RLHF's third step (Ouyang et al. 2022; Ziegler et al. 2019), on a HookedLM.

    history = train_ppo(sft_model, reward_model, prompts, PPOConfig(steps=40))
    evaluate_policy(policy, reference, reward_model, heldout_prompts)   # {"reward", "kl", ...}

Each step samples one completion for each of `prompts_per_step` prompts, then:
  - the reward model scores each (prompt, completion); that score, in units of the scores of the
    reference policy's own samples (normalize_scores; InstructGPT centres its reward model the
    same way), is the reward of the last token;
  - every token also gets -kl_coef * (log pi(token) - log pi_ref(token)), the per-token KL
    penalty to the frozen reference (the starting policy unless one is given);
  - a critic (a copy of the starting policy with a value head) estimates each token's return; GAE turns
    rewards and values into advantages (whitened over the batch) and returns;
  - `ppo_epochs` passes over the batch in `minibatches`, each an optimizer step on the clipped
    surrogate plus vf_coef times the clipped value loss.
With `state_dir` the state (policy, critic, AdamW, sampler RNG, history) is saved between
steps, so a killed run resumes to the weights of one never stopped.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import ConfigError
from harness.training.chat import encode_prompt, require_chat_template
from harness.training.gae import gae, masked_mean, masked_whiten
from harness.training.loop import TrainConfig, Trainer
from harness.training.reward import score_texts
from harness.training.rollout import Rollout, sample_completions


@dataclass
class PPOConfig(TrainConfig):
    prompts_per_step: int = 16  # rollouts per PPO step (one completion each)
    max_new_tokens: int = 16
    temperature: float = 1.0
    ppo_epochs: int = 4  # passes over each batch of rollouts
    minibatches: int = 2  # optimizer steps per pass
    clip_range: float = 0.2  # policy ratio kept within 1 +- clip_range
    clip_range_value: float = 0.2  # value estimates move at most this far from the rollout's
    vf_coef: float = 0.1
    kl_coef: float = 0.05  # beta: per-token penalty on log pi - log pi_ref
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    missing_eos_penalty: float | None = None  # subtracted from the score of a completion that never ends
    normalize_scores: bool = True  # scores in units of the reference policy's: (s - mean) / std of its samples
    lr: float = 1e-4
    warmup: int = 0


def ppo_policy_loss(logps, old_logps, advantages, mask, clip_range: float = 0.2):
    """(loss, clip fraction). The clipped surrogate (Schulman et al. 2017, eq. 7), negated and
    averaged over every completion token: -min(rho A, clip(rho, 1-eps, 1+eps) A), rho = pi/pi_old."""
    ratio = torch.exp(logps - old_logps)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip_range, 1 + clip_range) * advantages)
    clipped = ((ratio - 1).abs() > clip_range).to(logps.dtype)
    return -masked_mean(surrogate, mask), masked_mean(clipped, mask)


def ppo_value_loss(values, old_values, returns, mask, clip_range_value: float = 0.2) -> torch.Tensor:
    """0.5 * max((V - R)^2, (V_clipped - R)^2), V_clipped = V_old + clip(V - V_old, -c, c): the
    value may not move far from the rollout's estimate in one batch (as the policy may not)."""
    clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


class PolicyAndCritic(nn.Module):
    """The policy, and a critic: a copy of the starting policy whose final-norm residual feeds a
    value head. A separate critic (as in InstructGPT) keeps the value loss's gradients out of
    the policy; sharing the trunk let them move the policy without raising the reward."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.critic = copy.deepcopy(policy)
        self.value = nn.Linear(policy.cfg.d_model, 1).to(policy.device, policy.dtype)
        nn.init.zeros_(self.value.weight)  # V = 0 at the start: deterministic, and no early bias
        nn.init.zeros_(self.value.bias)

    def forward(self, ro: Rollout, temperature: float = 1.0, rows=None):
        """(log-probs, values), both [n, T] over the completion tokens of a rollout's rows."""
        tokens, attention = (ro.tokens, ro.attention) if rows is None else (ro.tokens[rows], ro.attention[rows])
        logps = _completion_logps(self.policy, tokens, attention, ro.width, temperature)
        resid = self.critic(tokens, attention_mask=attention, stop_at_layer=self.critic.cfg.n_layers)
        values = self.value(self.critic.ln_final(resid[:, ro.width - 1 : -1])).float()[..., 0]
        return logps, values


def _completion_logps(model, tokens, attention, width: int, temperature: float) -> torch.Tensor:
    resid = model(tokens, attention_mask=attention, stop_at_layer=model.cfg.n_layers)
    logits = model.unembed_residual(resid[:, width - 1 : -1]).float() / temperature  # positions predicting completions
    return torch.log_softmax(logits, -1).gather(-1, tokens[:, width:, None])[..., 0]


@torch.no_grad()
def completion_logps(model, ro: Rollout, temperature: float = 1.0) -> torch.Tensor:
    return _completion_logps(model, ro.tokens, ro.attention, ro.width, temperature)


def _prompt_texts(prompts) -> list[str]:
    texts = [p["prompt"] if isinstance(p, dict) else p for p in prompts]
    if not texts:
        raise ConfigError("PPO needs at least one prompt")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()), None)
    if bad is not None:
        raise ConfigError(f"prompt {bad} is empty or not text ({texts[bad]!r}); every PPO prompt needs text")
    return texts


def _scores(rm, prompts: list[str], ro: Rollout, cfg, tokenizer) -> torch.Tensor:
    scores = score_texts(rm, prompts, ro.completions(tokenizer), cfg.chat)
    if cfg.missing_eos_penalty:
        scores = scores - cfg.missing_eos_penalty * (~ro.ended).float().cpu()
    return scores


@torch.no_grad()
def reference_score_stats(reference, rm, texts: list[str], encoded: list[list[int]], cfg) -> tuple[float, float]:
    """(mean, std) of the reward model's scores of the reference policy's samples: a fixed
    sample of prompts and a fixed seed, so a resumed run computes the same numbers."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    idx = torch.randint(len(texts), (max(2 * cfg.prompts_per_step, 16),), generator=g).tolist()
    ro = sample_completions(reference, [encoded[i] for i in idx], cfg.max_new_tokens, cfg.temperature,
                            seed=cfg.seed * 100_003 - 1)
    scores = _scores(rm, [texts[i] for i in idx], ro, cfg, reference.tokenizer)
    return scores.mean().item(), max(scores.std().item(), 1e-6)


def train_ppo(policy, rm, prompts, cfg: PPOConfig | None = None, ref_model=None) -> list[dict]:
    """Optimise `policy` in place to raise rm's reward under a KL penalty to the reference.
    prompts: strings or {"prompt": ...} rows. Returns one entry per PPO step: the mean score
    of its rollouts, their KL to the reference (summed over tokens), the losses and clipping."""
    cfg = cfg or PPOConfig()
    texts = _prompt_texts(prompts)
    if cfg.chat:
        require_chat_template(policy.tokenizer)
    if cfg.prompts_per_step < cfg.minibatches:
        raise ConfigError(f"prompts_per_step ({cfg.prompts_per_step}) must be at least minibatches ({cfg.minibatches})")
    # A copy of the policy as it starts, made before a saved state is loaded into it.
    reference = ref_model if ref_model is not None else copy.deepcopy(policy).eval()
    agent = PolicyAndCritic(policy)
    tok = policy.tokenizer
    encoded = [encode_prompt(tok, t, cfg.chat) for t in texts]
    mean, std = reference_score_stats(reference, rm, texts, encoded, cfg) if cfg.normalize_scores else (0.0, 1.0)
    per_step = cfg.ppo_epochs * cfg.minibatches
    # Saved (with cfg.state_dir) only between PPO steps, so a resumed run never restarts half of one.
    trainer = Trainer(agent, cfg, "ppo", total=cfg.steps * per_step, autosave=False)
    history = trainer.records
    try:
        for step in range(trainer.step_index // per_step, cfg.steps):
            idx = trainer.batch_indices(len(texts), cfg.prompts_per_step)
            agent.eval()
            ro = sample_completions(policy, [encoded[i] for i in idx], cfg.max_new_tokens, cfg.temperature,
                                    seed=cfg.seed * 100_003 + step)
            scores = _scores(rm, [texts[i] for i in idx], ro, cfg, tok).to(policy.device)
            mask = ro.mask
            with torch.no_grad():
                old_logps, old_values = agent(ro, cfg.temperature)
                ref_logps = completion_logps(reference, ro, cfg.temperature)
                log_ratio = (old_logps - ref_logps) * mask
                rewards = -cfg.kl_coef * log_ratio
                last = mask.sum(-1) - 1  # a completion's mask is a prefix: its last real token
                rewards[torch.arange(len(idx)), last] += (scores - mean) / std
                advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
                if cfg.whiten_advantages:
                    advantages = masked_whiten(advantages, mask)
            agent.train()
            size = math.ceil(len(idx) / cfg.minibatches)
            for _ in range(cfg.ppo_epochs):
                order = torch.randperm(len(idx), generator=trainer.generator)
                for k in range(cfg.minibatches):
                    rows = order[k * size : (k + 1) * size]
                    logps, values = agent(ro, cfg.temperature, rows)
                    pg, clipfrac = ppo_policy_loss(logps, old_logps[rows], advantages[rows], mask[rows], cfg.clip_range)
                    vf = ppo_value_loss(values, old_values[rows], returns[rows], mask[rows], cfg.clip_range_value)
                    trainer.step(pg + cfg.vf_coef * vf, policy_loss=pg.item(), value_loss=vf.item(),
                                 clipfrac=clipfrac.item())
            history.append({"score": scores.mean().item(), "kl": log_ratio.sum(-1).mean().item(),
                            "policy_loss": pg.item(), "value_loss": vf.item(), "clipfrac": clipfrac.item(),
                            "completion_tokens": mask.sum(-1).float().mean().item()})
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                trainer.save_state()
    finally:
        trainer.close()
        policy.eval()
    return history


@torch.no_grad()
def evaluate_policy(policy, reference, rm, prompts, samples: int = 4, max_new_tokens: int = 16,
                    temperature: float = 1.0, seed: int = 0, chat: bool = True, batch_size: int = 64) -> dict:
    """On sampled completions of `prompts`: the mean reward-model score, and the KL from the
    reference, KL(pi || pi_ref), estimated as the mean over completions of sum_t log pi/pi_ref."""
    texts = _prompt_texts(prompts)
    owners = [t for t in texts for _ in range(samples)]
    ids = [encode_prompt(policy.tokenizer, t, chat) for t in owners]
    scores, kls = [], []
    was = policy.training
    policy.eval()
    for start in range(0, len(ids), batch_size):
        ro = sample_completions(policy, ids[start : start + batch_size], max_new_tokens, temperature, seed + start)
        scores.append(score_texts(rm, owners[start : start + batch_size], ro.completions(policy.tokenizer), chat))
        diff = (completion_logps(policy, ro, temperature) - completion_logps(reference, ro, temperature)) * ro.mask
        kls.append(diff.sum(-1).cpu())
    policy.train(was)
    scores, kls = torch.cat(scores), torch.cat(kls)
    return {"reward": scores.mean().item(), "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "kl": kls.mean().item(), "n": len(scores)}
