"""Training and evaluating a Bradley-Terry reward model on preference pairs.

    rm = RewardModel.from_lm(sft_model)
    history = train_reward_model(rm, pairs, RewardConfig(steps=200))   # {"prompt", "chosen", "rejected"}
    pairwise_accuracy(rm, heldout_pairs)   # {"accuracy", "n", "by_category": {...}, "category_mean"}

A pair may carry a "margin" (how much better chosen is, as in Llama 2's reward models) and a
"category" (what evaluation groups it under, as RewardBench reports per subset). With a
`state_dir` the run saves its state like every trainer here, so a killed run resumes to the
same weights.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.training.chat import encode_pair, require_chat_template
from harness.training.data import DataError
from harness.training.data import examples as check_examples
from harness.training.loop import TrainConfig, Trainer
from harness.training.reward import RewardModel, score_rows, score_texts


@dataclass
class RewardConfig(TrainConfig):
    lr: float = 3e-4
    center_rewards: float | None = None  # > 0 adds c * mean((r_chosen + r_rejected)^2): rewards centred on 0


def reward_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                center_rewards: float | None = None) -> torch.Tensor:
    """Bradley-Terry (Ouyang et al. 2022, eq. 1): -log sigmoid(r_chosen - r_rejected [- margin]),
    averaged; with center_rewards c, plus c * mean((r_chosen + r_rejected)^2) (Eisenstein et al. 2023)."""
    diff = chosen - rejected if margin is None else chosen - rejected - margin
    loss = -F.logsigmoid(diff).mean()
    if center_rewards:
        loss = loss + center_rewards * ((chosen + rejected) ** 2).mean()
    return loss


def _margins(pairs: list[dict]) -> torch.Tensor | None:
    if not any("margin" in p for p in pairs):
        return None
    bad = next((i for i, p in enumerate(pairs) if not isinstance(p.get("margin", 0.0), (int, float))
                or isinstance(p.get("margin"), bool)), None)
    if bad is not None:
        raise DataError(f"<examples> item {bad}: field 'margin' must be a number, got {pairs[bad]['margin']!r}")
    return torch.tensor([float(p.get("margin", 0.0)) for p in pairs])


def train_reward_model(rm: RewardModel, data, cfg: RewardConfig | None = None) -> list[dict]:
    """Fit `rm` in place to prefer each pair's chosen response; returns per-step metrics
    (loss, accuracy and mean margin of the batch)."""
    cfg = cfg or RewardConfig()
    if cfg.chat:
        require_chat_template(rm.tokenizer)
    pairs = check_examples(data, "preference")  # an empty side is one DataError line, before any work
    margins = _margins(pairs)
    enc = lambda prompt, response: encode_pair(rm.tokenizer, prompt, response, cfg.chat, cfg.max_len)  # noqa: E731
    chosen = [enc(p["prompt"], p["chosen"]) for p in pairs]
    rejected = [enc(p["prompt"], p["rejected"]) for p in pairs]
    rm.train()
    trainer = Trainer(rm, cfg, "reward model")  # resumes from cfg.state_dir if it holds a saved state
    try:
        for _ in range(trainer.step_index, cfg.steps):
            idx = trainer.batch_indices(len(pairs))
            scores = score_rows(rm, [chosen[i] for i in idx] + [rejected[i] for i in idx])
            rc, rr = scores[: len(idx)], scores[len(idx):]
            margin = margins[idx].to(rc.device) if margins is not None else None
            loss = reward_loss(rc, rr, margin, cfg.center_rewards)
            diff = (rc - rr).detach()
            trainer.step(loss, accuracy=(diff > 0).float().mean().item(), margin=diff.mean().item())
    finally:
        trainer.close()
        rm.eval()
    return trainer.history


def pairwise_accuracy(rm: RewardModel, data, chat: bool = True, batch_size: int = 32,
                      max_len: int | None = None, by: str = "category") -> dict:
    """How often rm scores chosen above rejected (ties count as wrong, as in RewardBench), over
    all pairs and per value of the field `by` (pairs without one are "all"). category_mean
    averages the groups, so a large one does not hide a weak one."""
    pairs = check_examples(data, "preference")
    prompts = [p["prompt"] for p in pairs]
    rc = score_texts(rm, prompts, [p["chosen"] for p in pairs], chat, batch_size, max_len)
    rr = score_texts(rm, prompts, [p["rejected"] for p in pairs], chat, batch_size, max_len)
    right = (rc > rr).tolist()
    groups: dict[str, list[bool]] = defaultdict(list)
    for p, ok in zip(pairs, right):
        groups[str(p.get(by, "all"))].append(ok)
    by = {c: {"accuracy": sum(v) / len(v), "n": len(v)} for c, v in sorted(groups.items())}
    return {"accuracy": sum(right) / len(right), "n": len(right), "by_category": by,
            "category_mean": sum(v["accuracy"] for v in by.values()) / len(by),
            "mean_margin": (rc - rr).mean().item()}
