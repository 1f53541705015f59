"""Supervised fine-tuning: next-token loss on the response tokens only (the prompt is context).

    losses = train_sft(model, [{"prompt": "Hi", "response": "Hello."}], SFTConfig(steps=50))
    losses = train_lm(model, ["plain text documents", ...], SFTConfig(steps=200))   # pretraining

Prompts are rendered with the tokenizer's chat template (chat=False for plain text). The
model is trained in place; the loss of every step is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.tokens import pad_id
from harness.training.chat import Encoded, collate, encode_pair, require_chat_template, scored_token_logps
from harness.training.data import examples as check_examples
from harness.training.loop import TrainConfig, Trainer


@dataclass
class SFTConfig(TrainConfig):
    pass


def masked_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood over the scored (response) tokens of a collated batch."""
    _, picked = scored_token_logps(model, batch["tokens"], batch["loss_mask"])
    return -picked.sum() / max(picked.numel(), 1)


def train_rows(model, rows: list[Encoded], cfg: TrainConfig, desc: str) -> list[float]:
    """The loop both SFT and pretraining use: sample a batch, score its masked tokens, step."""
    model.train()
    trainer = Trainer(model, cfg, desc)  # resumes from cfg.state_dir if it holds a saved state
    pad = pad_id(model.tokenizer)
    try:
        for _ in range(trainer.step_index, cfg.steps):
            batch = collate([rows[i] for i in trainer.batch_indices(len(rows))], pad)
            trainer.step(masked_nll(model, {k: v.to(model.device) for k, v in batch.items()}))
    finally:
        trainer.close()
        model.eval()
    return [h["loss"] for h in trainer.history]


def train_sft(model, data, cfg: SFTConfig | None = None) -> list[float]:
    """Fine-tune on prompt/response examples (a JSONL path or a list of dicts)."""
    cfg = cfg or SFTConfig()
    if cfg.chat:
        require_chat_template(model.tokenizer)  # fail before any work
    rows = [encode_pair(model.tokenizer, ex["prompt"], ex["response"], cfg.chat, cfg.max_len) for ex in check_examples(data, "sft")]
    return train_rows(model, rows, cfg, "sft")


def train_lm(model, texts: list[str], cfg: SFTConfig | None = None) -> list[float]:
    """Plain language modelling on documents (each starts with BOS, ends with EOS)."""
    cfg = cfg or SFTConfig()
    tok = model.tokenizer
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    rows = []
    for text in texts:
        ids = tok.encode(text) + eos
        rows.append(Encoded(ids[: cfg.max_len] if cfg.max_len else ids, 0))
    return train_rows(model, rows, cfg, "pretraining")
