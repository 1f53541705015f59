"""What every recipe's loop shares: settings, AdamW with warmup + cosine decay, batches, a progress
bar, and (with `state_dir`) a saved training state that a killed run resumes from.

The state is the trainable weights, AdamW's moments, the batch sampler's RNG and the metrics so
far, written every `save_every` steps as a safetensors file named by its step, then a JSON that
names that file and its sha256. Each file is written atomically and the JSON last, so a kill
between any two writes leaves the JSON naming a complete earlier state; a resume checks the
hash and refuses a mismatch. A resumed run takes the same batches and reaches the same weights
as one that was never stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.errors import CheckpointError
from harness.runs import atomic_write

STATE_JSON = "trainer_state.json"  # written last: names the tensors file of the same step
LEGACY_TENSORS = "trainer_state.safetensors"  # states saved before the JSON named its tensors


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
    state_dir: str | None = None  # where to keep the resumable training state (None: not kept)
    save_every: int = 10  # steps between saves of that state


def saved_step(state_dir) -> int | None:
    """The step a training state in `state_dir` was saved after, or None if there is none."""
    path = Path(state_dir).expanduser() / STATE_JSON
    try:
        return json.loads(path.read_text())["step"] if path.is_file() else None
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot read the training state {path}: {err}; delete it to start over") from None


class Trainer:
    """One optimizer over the trainable parameters, stepped with clipping and the LR schedule."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, desc: str = "training", total: int | None = None,
                 autosave: bool = True):
        self.model, self.cfg = model, cfg
        self.autosave = autosave  # False: the loop calls save_state() itself, at boundaries it chooses
        self.total = total or cfg.steps  # optimizer steps the LR schedule spans
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step_index = 0
        self.history: list[dict] = []  # one entry per optimizer step
        self.records: list[dict] = []  # whatever else the loop wants kept across a resume
        self.state_dir = Path(cfg.state_dir).expanduser() if cfg.state_dir else None
        if self.state_dir is not None and (self.state_dir / STATE_JSON).is_file():
            self._load_state()
        self.bar = tqdm(total=self.total, initial=self.step_index, desc=desc, disable=not cfg.show_progress, leave=False)

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
        value = loss.item()
        self.history.append({"loss": value, **shown})
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{value:.4f}", **{k: f"{v:.3f}" for k, v in shown.items()})
        if self.autosave and (self.step_index % self.cfg.save_every == 0 or self.step_index == self.total):
            self.save_state()

    def close(self) -> None:
        self.bar.close()

    # ---------------------------------------------------------------- resumable state

    def _settings(self) -> dict:
        """What must match for a saved state to be resumed (not the progress-bar or saving settings)."""
        keep = {k: v for k, v in asdict(self.cfg).items() if k not in ("show_progress", "state_dir", "save_every")}
        return {"config": keep, "total": self.total, "params": {n: list(p.shape) for n, p in self.named}}

    def save_state(self) -> None:
        from safetensors.torch import save

        if self.state_dir is None:
            return
        tensors = {"rng": self.generator.get_state()}
        for name, p in self.named:
            tensors[f"param/{name}"] = p.detach().cpu().contiguous()
            for key, value in self.opt.state.get(p, {}).items():
                tensors[f"{key}/{name}"] = value.detach().cpu().reshape(value.shape).contiguous()
        data = save(tensors)
        name = f"trainer_state-{self.step_index:08d}.safetensors"
        meta = {"settings": self._settings(), "step": self.step_index, "history": self.history, "records": self.records,
                "tensors": name, "sha256": hashlib.sha256(data).hexdigest()}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.state_dir / name, lambda f: f.write(data))
        text = json.dumps(meta).encode("utf-8")
        atomic_write(self.state_dir / STATE_JSON, lambda f: f.write(text))
        for old in self.state_dir.glob("trainer_state*.safetensors"):  # states the JSON no longer names
            if old.name != name:
                old.unlink(missing_ok=True)

    def _load_state(self) -> None:
        from safetensors.torch import load

        where = self.state_dir
        try:
            meta = json.loads((where / STATE_JSON).read_text())
            data = (where / meta.get("tensors", LEGACY_TENSORS)).read_bytes()
        except (OSError, ValueError, AttributeError) as err:
            raise CheckpointError(f"cannot resume from {where}: {err}; delete the folder to start over") from None
        if "sha256" in meta and hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise CheckpointError(f"cannot resume from {where}: {meta['tensors']} does not match the sha256 its "
                                  f"{STATE_JSON} records (a damaged or mixed state); delete the folder to start over")
        try:
            tensors = load(data)
        except Exception as err:  # safetensors raises its own error type for a damaged file
            raise CheckpointError(f"cannot resume from {where}: unreadable tensors ({err}); delete the folder to "
                                  "start over") from None
        if meta.get("settings") != json.loads(json.dumps(self._settings())):
            raise CheckpointError(f"{where} holds the state of a different training run (other settings or model); "
                                  "delete it or choose another state folder")
        with torch.no_grad():
            for name, p in self.named:
                p.copy_(tensors[f"param/{name}"])
                moments = {k: tensors[f"{k}/{name}"] for k in ("step", "exp_avg", "exp_avg_sq") if f"{k}/{name}" in tensors}
                if moments:
                    self.opt.state[p] = {k: v.to(p.device) if k != "step" else v for k, v in moments.items()}
        self.generator.set_state(tensors["rng"])
        self.step_index, self.history, self.records = meta["step"], meta["history"], meta.get("records", [])
