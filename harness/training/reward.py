"""A Bradley-Terry reward model: a HookedLM whose final-norm residual at a sequence's last real
token goes through a scalar head.

    rm = RewardModel.from_lm(sft_model)                  # the backbone's weights, a new head
    rm(tokens, attention_mask=mask)                      # rewards [batch]
    score_texts(rm, prompts, responses)                  # prompt (chat template) + response + EOS
    save_reward_model(rm, folder, metadata={...}); load_reward_model(folder)

Hooks: every hook of the backbone keeps its TransformerLens name, plus
    reward.hook_pooled   [batch, d_model]  ln_final's output at the scored (last real) token
    reward.hook_score    [batch]           the scalar reward
so `rm.run_with_cache(tokens)` caches the reward with the activations that produced it.

On disk a reward model is its backbone's checkpoint (what save_checkpoint writes, so
`harness.load` and transformers read it as a language model) plus `reward/score.safetensors`
(the head; a subfolder, because a model folder's own *.safetensors are all backbone weights),
with the head's sha256 and the metadata in harness.json.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from pathlib import Path

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from harness.errors import CheckpointError
from harness.models.transformer import HookedLM
from harness.tokens import pad_id
from harness.training.chat import Encoded, collate, encode_pair

HEAD_FILE = "reward/score.safetensors"
KIND = "bradley-terry reward model"


class RewardHead(nn.Module):
    """normalised residual [b, t, d] and each row's scored position [b] -> rewards [b]."""

    def __init__(self, d_model: int):
        super().__init__()
        self.score = nn.Linear(d_model, 1, bias=False)  # no bias: a Bradley-Terry loss cannot see one
        self.hook_pooled = HookPoint()
        self.hook_score = HookPoint()

    def forward(self, normalized: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        pooled = self.hook_pooled(normalized[torch.arange(normalized.shape[0], device=last.device), last])
        return self.hook_score(self.score(pooled)[:, 0])


def last_positions(attention_mask: torch.Tensor | None, batch: int, width: int, device) -> torch.Tensor:
    """Index of each row's last real token (either padding side); the last column without a mask."""
    if attention_mask is None:
        return torch.full((batch,), width - 1, dtype=torch.long, device=device)
    cols = torch.arange(width, device=attention_mask.device)
    return (attention_mask.bool() * (cols + 1)).argmax(-1).to(device)


class RewardModel(HookedLM):
    """HookedLM + RewardHead. forward returns rewards [batch]; return_type="logits" (or
    stop_at_layer) runs the backbone as the language model it was."""

    @classmethod
    def from_lm(cls, lm: HookedLM, seed: int = 0, copy_weights: bool = True) -> "RewardModel":
        """A reward model on `lm`'s weights: a copy (lm untouched), or lm itself with copy_weights=False."""
        rm = copy.deepcopy(lm) if copy_weights else lm
        rm.__class__ = cls  # only the head and forward are new, so the instance keeps all it had
        rm.reward = RewardHead(lm.cfg.d_model).to(lm.device, lm.dtype)
        # Unit-variance rewards at the start, as in Stiennon et al. (2020); seeded, so runs repeat.
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            rm.reward.score.weight.copy_(torch.randn(rm.reward.score.weight.shape, generator=g)
                                         / (lm.cfg.d_model + 1) ** 0.5)
        rm.setup()  # register reward.hook_* beside the backbone's hooks
        return rm

    def forward(self, input, return_type: str | None = "reward", attention_mask: torch.Tensor | None = None,
                stop_at_layer: int | None = None, **kwargs):
        if return_type != "reward" or stop_at_layer is not None:
            return super().forward(input, return_type=return_type, attention_mask=attention_mask,
                                   stop_at_layer=stop_at_layer, **kwargs)
        if isinstance(input, (str, list)):
            input, attention_mask = self.to_tokens(input, return_mask=True)
        if input.dim() == 1:
            input = input[None]
        left_padded = attention_mask is not None and bool((attention_mask[:, 0] == 0).any())
        # Right padding needs no mask in a causal model (pads follow every real token): the fused kernel runs.
        resid = super().forward(input, attention_mask=attention_mask if left_padded else None,
                                stop_at_layer=self.cfg.n_layers, **kwargs)
        last = last_positions(attention_mask, *input.shape[:2], resid.device)
        return self.reward(self.ln_final(resid), last)

    def generate(self, *args, **kwargs):
        """Sampling is the language model's (forward here returns rewards, not logits)."""
        return self.backbone().generate(*args, **kwargs)

    def backbone(self) -> HookedLM:
        """A plain HookedLM sharing these weights, without the head (what save_checkpoint writes)."""
        lm = copy.copy(self)
        lm._modules = {k: v for k, v in self._modules.items() if k != "reward"}
        lm.__class__ = HookedLM
        return lm


def score_rows(rm: RewardModel, rows: list[Encoded]) -> torch.Tensor:
    """Rewards [n] of encoded rows (one forward over a right-padded batch)."""
    batch = collate(rows, pad_id(rm.tokenizer))
    return rm(batch["tokens"].to(rm.device), attention_mask=batch["attention_mask"].to(rm.device))


@torch.no_grad()
def score_texts(rm: RewardModel, prompts: list[str], responses: list[str], chat: bool = True,
                batch_size: int = 32, max_len: int | None = None) -> torch.Tensor:
    """Rewards [n] of (prompt, response) pairs, encoded as training encodes them."""
    rows = [encode_pair(rm.tokenizer, p, r, chat, max_len) for p, r in zip(prompts, responses, strict=True)]
    was_training = rm.training
    rm.eval()
    out = torch.cat([score_rows(rm, rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]) \
        if rows else torch.zeros(0)
    rm.train(was_training)
    return out.float().cpu()


# -------------------------------------------------------------------- saving and loading

def _head_bytes(rm: RewardModel) -> bytes:
    from safetensors.torch import save

    return save({"score.weight": rm.reward.score.weight.detach().to("cpu", torch.float32).contiguous()})


def save_reward_model(rm: RewardModel, folder, metadata: dict | None = None, description: str = "") -> Path:
    """Write the backbone checkpoint and the head into `folder`, atomically (a staging folder
    renamed into place, so a killed save leaves the old folder or the new one)."""
    from harness.training.checkpoint import save_checkpoint

    folder = Path(folder).expanduser()
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.reward")
    shutil.rmtree(staging, ignore_errors=True)
    head = _head_bytes(rm)
    meta = {**(metadata or {}), "reward_model": {"kind": KIND, "head": HEAD_FILE,
                                                 "head_sha256": hashlib.sha256(head).hexdigest()}}
    try:
        save_checkpoint(rm.backbone(), staging, metadata=meta, description=description or "reward model")
        (staging / HEAD_FILE).parent.mkdir()
        (staging / HEAD_FILE).write_bytes(head)
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_reward_model(folder, device="cpu", dtype=torch.float32) -> RewardModel:
    """A reward model saved by save_reward_model (its head checked against the recorded sha256)."""
    from safetensors.torch import load

    from harness.loading import from_folder
    from harness.training.checkpoint import read_metadata

    folder = Path(folder).expanduser()
    info = read_metadata(folder).get("reward_model")
    if not info:
        raise CheckpointError(f"{folder} is not a reward model (its harness.json has no 'reward_model' entry); "
                              "save one with harness.training.save_reward_model")
    path = folder / info.get("head", HEAD_FILE)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read the reward head {path}: {err.strerror}; re-save the reward model") from None
    if hashlib.sha256(data).hexdigest() != info.get("head_sha256"):
        raise CheckpointError(f"the reward head {path} does not match the sha256 in its harness.json (a damaged or "
                              "mixed folder); re-save the reward model")
    rm = RewardModel.from_lm(from_folder(folder, device=device, dtype=dtype), copy_weights=False)
    with torch.no_grad():
        rm.reward.score.weight.copy_(load(data)["score.weight"])
    return rm.eval()
