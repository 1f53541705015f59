"""GRPO (Shao et al. 2024) with verifiable rewards, and its common variants:

    grpo     advantages (r - mean) / std within each prompt's group; token ratios clipped at
             1 +- epsilon; each sequence's tokens averaged, then sequences averaged.
    dr_grpo  "GRPO done right" (Liu et al. 2025): no std scaling, and token terms summed and
             divided by a constant (group size x max new tokens), removing GRPO's length bias.
    dapo     DAPO (Yu et al. 2025): token-level normalisation (sum over all tokens / token count)
             and clip-higher (epsilon_high = 0.28 > epsilon = 0.2).
    gspo     GSPO (Zheng et al. 2025): one importance ratio per sequence, the geometric mean of
             its token ratios, clipped in a narrow band (3e-4, 4e-4).

    history = train_grpo(model, arithmetic_task(64), arithmetic_reward, GRPOConfig.preset("dapo", steps=30))
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Callable

import torch

from harness.errors import ConfigError
from harness.training.chat import encode_prompt, require_chat_template, token_logps
from harness.training.loop import TrainConfig, Trainer
from harness.training.rollout import sample_completions

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "gspo")


@dataclass
class GRPOConfig(TrainConfig):
    loss_type: str = "grpo"
    group_size: int = 8  # completions sampled per prompt
    prompts_per_step: int = 4
    max_new_tokens: int = 16
    temperature: float = 1.0
    epsilon: float = 0.2  # lower clip: ratio >= 1 - epsilon
    epsilon_high: float | None = None  # upper clip; None means epsilon (DAPO's clip-higher raises it)
    beta: float = 0.0  # KL penalty to the reference model (k3 estimator); 0 needs no reference
    scale_rewards: bool = True  # divide advantages by the group's std (Dr. GRPO does not)
    inner_steps: int = 1  # optimizer steps per batch of samples (ratios move away from 1 after the first)
    lr: float = 1e-4
    warmup: int = 0

    @classmethod
    def preset(cls, loss_type: str, **overrides) -> "GRPOConfig":
        """The variant's published settings, then your overrides."""
        settings = {
            "grpo": {},
            "dr_grpo": {"scale_rewards": False},
            "dapo": {"epsilon_high": 0.28},
            "gspo": {"epsilon": 3e-4, "epsilon_high": 4e-4},
        }
        if loss_type not in settings:
            raise ConfigError(f"unknown GRPO loss type {loss_type!r}; expected one of {LOSS_TYPES}")
        return cls(loss_type=loss_type, **{**settings[loss_type], **overrides})


def group_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """rewards [n_prompts, group] -> advantages of the same shape, relative to each group."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, keepdim=True) + eps) if scale else centred


def policy_loss(logps, old_logps, advantages, mask, loss_type="grpo", epsilon=0.2, epsilon_high=None,
                ref_logps=None, beta=0.0, max_new_tokens=None) -> torch.Tensor:
    """The clipped surrogate, negated. logps/old_logps/ref_logps/mask: [n, t] over completion
    tokens; advantages: [n] (one per completion)."""
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"unknown GRPO loss type {loss_type!r}; expected one of {LOSS_TYPES}")
    mask = mask.to(logps.dtype)
    lengths = mask.sum(-1).clamp(min=1)
    low, high = 1 - epsilon, 1 + (epsilon if epsilon_high is None else epsilon_high)
    if loss_type == "gspo":
        # sequence ratio s_i = exp(mean_t log(pi/pi_old)): the whole completion shares one ratio
        ratio = torch.exp(((logps - old_logps) * mask).sum(-1) / lengths)
        objective = torch.minimum(ratio * advantages, ratio.clamp(low, high) * advantages)
        if beta:
            objective = objective - beta * (_k3(logps, ref_logps) * mask).sum(-1) / lengths
        return -objective.mean()
    ratio = torch.exp(logps - old_logps)
    adv = advantages[:, None]
    per_token = torch.minimum(ratio * adv, ratio.clamp(low, high) * adv)
    if beta:
        per_token = per_token - beta * _k3(logps, ref_logps)
    per_token = per_token * mask
    if loss_type == "grpo":
        return -(per_token.sum(-1) / lengths).mean()
    if loss_type == "dapo":
        return -per_token.sum() / mask.sum().clamp(min=1)
    width = max_new_tokens or logps.shape[1]  # dr_grpo: a constant, not the sampled lengths
    return -per_token.sum() / (logps.shape[0] * width)


def _k3(logps, ref_logps):
    """Unbiased, always-positive KL estimate per token (Schulman's k3), as GRPO uses."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


# -------------------------------------------------------------------- a verifiable task

def arithmetic_task(n: int, seed: int = 0, top: int = 9) -> list[dict]:
    """Addition questions with their answers: {"prompt": "What is 3 plus 4?", "answer": 7}."""
    rng = random.Random(seed)
    pairs = [(rng.randint(0, top), rng.randint(0, top)) for _ in range(n)]
    return [{"prompt": f"What is {a} plus {b}?", "answer": a + b} for a, b in pairs]


def arithmetic_reward(item: dict, completion: str) -> float:
    """1 if the last number in the completion is the answer, else 0 (a program checks it)."""
    numbers = re.findall(r"-?\d+", completion)
    return float(bool(numbers) and int(numbers[-1]) == int(item["answer"]))


# -------------------------------------------------------------------- training

def sample(model, prompt_ids: list[list[int]], cfg: GRPOConfig, seed: int):
    """Left-pad prompts, sample completions. Returns (tokens [n, P+T], attention [n, P+T],
    completion mask [n, T]: tokens up to and including the first end token)."""
    out = sample_completions(model, prompt_ids, cfg.max_new_tokens, cfg.temperature, seed)
    return out.tokens, out.attention, out.mask, out.width


def completion_logps(model, tokens, attention, prompt_width):
    return token_logps(model, tokens, attention)[:, prompt_width - 1 :]


def train_grpo(model, items: list[dict], reward_fn: Callable[[dict, str], float], cfg: GRPOConfig | None = None,
               ref_model=None) -> list[dict]:
    """Optimise `model` in place to raise reward_fn(item, completion) on items ({"prompt": ...}).
    Returns per-step metrics (mean reward of the sampled completions, loss)."""
    cfg = cfg or GRPOConfig()
    if cfg.loss_type not in LOSS_TYPES:
        raise ConfigError(f"unknown GRPO loss type {cfg.loss_type!r}; expected one of {LOSS_TYPES}")
    if cfg.chat:
        require_chat_template(model.tokenizer)
    if not items:
        raise ConfigError("GRPO needs at least one prompt")
    reference = ref_model
    if cfg.beta and reference is None:
        import copy

        reference = copy.deepcopy(model).eval()  # frozen copy of the starting policy
    tok = model.tokenizer
    encoded = [encode_prompt(tok, x["prompt"], cfg.chat) for x in items]
    # Saved (with cfg.state_dir) only between groups, so a resumed run never restarts half a group.
    trainer = Trainer(model, cfg, f"grpo ({cfg.loss_type})", total=cfg.steps * cfg.inner_steps, autosave=False)
    history = trainer.records  # one entry per group of samples; restored on resume
    try:
        for step in range(trainer.step_index // cfg.inner_steps, cfg.steps):
            chosen = trainer.batch_indices(len(items), cfg.prompts_per_step)
            group = [i for i in chosen for _ in range(cfg.group_size)]
            model.eval()
            tokens, attention, mask, width = sample(model, [encoded[i] for i in group], cfg, seed=cfg.seed * 100_003 + step)
            texts = [tok.decode(row[m].tolist(), skip_special_tokens=True) for row, m in zip(tokens[:, width:], mask)]
            rewards = torch.tensor([reward_fn(items[i], t) for i, t in zip(group, texts)], dtype=torch.float32)
            adv = group_advantages(rewards.view(len(chosen), cfg.group_size), cfg.scale_rewards).flatten()
            with torch.no_grad():
                old = completion_logps(model, tokens, attention, width)
                ref = completion_logps(reference, tokens, attention, width) if cfg.beta else None
            model.train()
            for _ in range(cfg.inner_steps):
                logps = completion_logps(model, tokens, attention, width)
                loss = policy_loss(logps, old, adv.to(logps.device), mask, cfg.loss_type, cfg.epsilon,
                                   cfg.epsilon_high, ref, cfg.beta, cfg.max_new_tokens)
                trainer.step(loss, reward=rewards.mean().item())
            history.append({"reward": rewards.mean().item(), "loss": loss.item(),
                            "completion_tokens": mask.sum(-1).float().mean().item()})
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                trainer.save_state()
    finally:
        trainer.close()
        model.eval()
    return history


@torch.no_grad()
def mean_reward(model, items: list[dict], reward_fn, samples: int = 4, max_new_tokens: int = 16,
                temperature: float = 1.0, seed: int = 0, chat: bool = True) -> float:
    """Average reward of sampled completions (samples per item): the quantity GRPO raises."""
    cfg = replace(GRPOConfig(), max_new_tokens=max_new_tokens, temperature=temperature)
    ids = [encode_prompt(model.tokenizer, x["prompt"], chat) for x in items for _ in range(samples)]
    tokens, _, mask, width = sample(model, ids, cfg, seed)
    texts = [model.tokenizer.decode(row[m].tolist(), skip_special_tokens=True) for row, m in zip(tokens[:, width:], mask)]
    owners = [x for x in items for _ in range(samples)]
    return sum(reward_fn(x, t) for x, t in zip(owners, texts)) / len(texts)
