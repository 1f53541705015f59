"""Preference optimisation of a HookedLM: DPO (+ conservative DPO), IPO, SimPO, ORPO and KTO.

    history = train_preference(model, "pairs.jsonl", PreferenceConfig(loss="dpo", beta=0.1, steps=50))
    preference_margin(model, held_out_pairs)   # mean log p(chosen) - log p(rejected)

Data: {"prompt", "chosen", "rejected"} pairs; KTO also takes unpaired {"prompt", "completion",
"label"} rows (pairs become one desirable and one undesirable row). The reference model's
log-probs are computed once before training (by default the model itself as it was then), so
no second model is kept in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from harness.errors import ConfigError
from harness.tokens import pad_id
from harness.training import losses as L
from harness.training.chat import Encoded, collate, encode_pair, require_chat_template, scored_token_logps
from harness.training.data import examples as check_examples
from harness.training.loop import TrainConfig, Trainer

LOSSES = ("dpo", "ipo", "simpo", "orpo", "kto")
NEEDS_REFERENCE = ("dpo", "ipo", "kto")


@dataclass
class PreferenceConfig(TrainConfig):
    loss: str = "dpo"
    beta: float = 0.1  # DPO/IPO/KTO: strength of the tie to the reference; SimPO: reward scale
    label_smoothing: float = 0.0  # conservative DPO's eps
    simpo_gamma: float = 0.5
    orpo_lambda: float = 0.1
    kto_lambda_d: float = 1.0
    kto_lambda_u: float = 1.0
    nll_weight: float = 0.0  # > 0 adds the chosen response's mean NLL (RPO), which keeps DPO from unlearning it
    lr: float = 5e-4


def sequence_logps(model, rows: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs [n] and response lengths [n] of encoded rows (one forward)."""
    batch = {k: v.to(model.device) for k, v in collate(rows, pad_id(model.tokenizer)).items()}
    row, picked = scored_token_logps(model, batch["tokens"], batch["loss_mask"])
    sums = torch.zeros(len(rows), dtype=picked.dtype, device=picked.device).index_add(0, row, picked)
    return sums, batch["loss_mask"].sum(-1).to(picked.dtype)


@torch.no_grad()
def _all_logps(model, rows: list[Encoded], batch_size: int) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([sequence_logps(model, rows[i : i + batch_size])[0] for i in range(0, len(rows), batch_size)])
    model.train(was_training)
    return out


def _unpaired(data) -> bool:
    """Whether data holds KTO's unpaired {"prompt", "completion", "label"} rows."""
    if isinstance(data, str):
        from pathlib import Path

        path = Path(data).expanduser()
        first = next((line for line in path.open(encoding="utf-8") if line.strip()), "") if path.is_file() else ""
        return '"completion"' in first
    return bool(data) and isinstance(data[0], dict) and "completion" in data[0]


def _encode(model, cfg: PreferenceConfig, data) -> tuple[list[Encoded], list[Encoded], list[bool]]:
    """-> (scored rows, KL rows for KTO's reference point, desirable flags). For paired losses
    the scored rows are [chosen..., rejected...]."""
    enc = lambda prompt, response: encode_pair(model.tokenizer, prompt, response, cfg.chat, cfg.max_len)  # noqa: E731
    if cfg.loss == "kto" and _unpaired(data):
        triples = [(r["prompt"], r["completion"], r["label"]) for r in check_examples(data, "kto")]
    else:
        pairs = check_examples(data, "preference")
        if cfg.loss != "kto":
            return [enc(p["prompt"], p["chosen"]) for p in pairs] + [enc(p["prompt"], p["rejected"]) for p in pairs], [], []
        triples = [(p["prompt"], p["chosen"], True) for p in pairs] + [(p["prompt"], p["rejected"], False) for p in pairs]
    scored = [enc(p, c) for p, c, _ in triples]
    # KTO's KL estimate pairs each prompt with another row's completion (a fixed derangement).
    n = len(triples)
    kl_rows = [enc(triples[i][0], triples[(i + 1) % n][1]) for i in range(n)]
    return scored, kl_rows, [d for _, _, d in triples]


def train_preference(model, data, cfg: PreferenceConfig | None = None, ref_model=None) -> list[dict]:
    """Optimise `model` in place on preference data; returns per-step metrics."""
    cfg = cfg or PreferenceConfig()
    if cfg.loss not in LOSSES:
        raise ConfigError(f"unknown preference loss {cfg.loss!r}; expected one of {LOSSES}")
    if cfg.chat:
        require_chat_template(model.tokenizer)
    data = str(data) if isinstance(data, (str, os.PathLike)) else list(data)
    scored, kl_rows, desirable = _encode(model, cfg, data)

    reference = ref_model if ref_model is not None else model
    ref = _all_logps(reference, scored, cfg.batch_size) if cfg.loss in NEEDS_REFERENCE else None
    ref_kl = _all_logps(reference, kl_rows, cfg.batch_size) if cfg.loss == "kto" else None

    model.train()
    trainer = Trainer(model, cfg, cfg.loss)  # resumes from cfg.state_dir if it holds a saved state
    n_pairs = len(scored) // 2
    try:
        for _ in range(trainer.step_index, cfg.steps):
            if cfg.loss == "kto":
                idx = trainer.batch_indices(len(scored))
                logps, _ = sequence_logps(model, [scored[i] for i in idx] + [kl_rows[i] for i in idx])
                pol, pol_kl = logps[: len(idx)], logps[len(idx) :]
                z0 = L.kl_reference_point(pol_kl, ref_kl[idx])
                flags = torch.tensor([desirable[i] for i in idx])
                per = L.kto_loss(pol, ref[idx], flags, z0, cfg.beta, cfg.kto_lambda_d, cfg.kto_lambda_u)
                reward = (pol - ref[idx]).detach()
                metrics = {"kl": z0.item(), "reward_desirable": reward[flags].mean().item() if flags.any() else 0.0}
            else:
                idx = trainer.batch_indices(n_pairs)
                logps, lens = sequence_logps(model, [scored[i] for i in idx] + [scored[n_pairs + i] for i in idx])
                b = len(idx)
                pc, pr, lc, lr = logps[:b], logps[b:], lens[:b], lens[b:]
                per, margin = _pair_loss(cfg, pc, pr, lc, lr, ref, idx, n_pairs)
                if cfg.nll_weight:
                    per = per + cfg.nll_weight * -(pc / lc)
                metrics = {"margin": margin.mean().item(), "accuracy": (margin > 0).float().mean().item()}
            trainer.step(per.mean(), **metrics)
    finally:
        trainer.close()
        model.eval()
    return trainer.history


def _pair_loss(cfg, pc, pr, lc, lr, ref, idx, n_pairs):
    """Per-pair loss and the implicit reward margin the loss is pushing up."""
    if cfg.loss in ("dpo", "ipo"):
        rc, rr = ref[idx], ref[[n_pairs + i for i in idx]]
        margin = ((pc - rc) - (pr - rr)).detach()
        if cfg.loss == "dpo":
            return L.dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing), cfg.beta * margin
        return L.ipo_loss(pc, pr, rc, rr, cfg.beta), margin
    margin = (pc / lc - pr / lr).detach()
    if cfg.loss == "simpo":
        return L.simpo_loss(pc, pr, lc, lr, cfg.beta, cfg.simpo_gamma), cfg.beta * margin
    return L.orpo_loss(pc, pr, lc, lr, cfg.orpo_lambda), margin


@torch.no_grad()
def preference_margin(model, data, chat: bool = True, batch_size: int = 32, max_len: int | None = None) -> float:
    """Mean over pairs of log p(chosen) - log p(rejected) under `model` (summed response log-probs)."""
    pairs = check_examples(data, "preference")
    chosen = [encode_pair(model.tokenizer, p["prompt"], p["chosen"], chat, max_len) for p in pairs]
    rejected = [encode_pair(model.tokenizer, p["prompt"], p["rejected"], chat, max_len) for p in pairs]
    return (_all_logps(model, chosen, batch_size) - _all_logps(model, rejected, batch_size)).mean().item()
