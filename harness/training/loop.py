"""What every recipe's loop shares: settings, AdamW with warmup + cosine decay, batches, a progress bar."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class TrainConfig:
    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 10
    grad_clip: float | None = 1.0
    max_len: int | None = None  # longer rows are cut
    chat: bool = True  # render prompts with the tokenizer's chat template
    seed: int = 0
    show_progress: bool = True


class Trainer:
    """One optimizer over the trainable parameters, stepped with clipping and the LR schedule."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, desc: str = "training", total: int | None = None):
        self.model, self.cfg = model, cfg
        self.total = total or cfg.steps  # optimizer steps the LR schedule spans
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.bar = tqdm(total=self.total, desc=desc, disable=not cfg.show_progress, leave=False)
        self.step_index = 0

    def lr_at(self, step: int) -> float:
        if step < self.cfg.warmup:
            return self.cfg.lr * (step + 1) / self.cfg.warmup
        progress = (step - self.cfg.warmup) / max(1, self.total - self.cfg.warmup)
        return self.cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def batch_indices(self, n: int, size: int | None = None) -> list[int]:
        size = min(size or self.cfg.batch_size, n)
        return torch.randperm(n, generator=self.generator)[:size].tolist()

    def step(self, loss: torch.Tensor, **shown: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step_index)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.step_index += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v:.3f}" for k, v in shown.items()})

    def close(self) -> None:
        self.bar.close()
