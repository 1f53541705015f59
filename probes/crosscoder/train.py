"""Train a crosscoder from an activation source, resumably.

    result = train_crosscoder(cc, source, TrainConfig(steps=2000, save_every=100), folder="out/")

`source.batch(step, batch_size)` gives the rows of step `step` ([batch, models, layers, d_in]),
the same rows for the same step, so a resumed run sees exactly the batches the lost one would
have. With `folder`, every `save_every` steps the whole training state (weights, Adam moments,
BatchTopK threshold, steps since each latent fired, history) is written into a new folder
`state-<step>` under a temporary name and renamed into place: a kill leaves the previous state or
the new one, never half of one. A restart with the same config and source resumes from the
newest state and ends with the same weights as a run never interrupted. Memory: one batch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

import torch

from harness.runs import atomic_write, dumps
from probes.crosscoder.config import CrosscoderError, TrainConfig
from probes.crosscoder.io import save_crosscoder
from probes.crosscoder.losses import training_loss
from probes.crosscoder.model import Crosscoder

STATE_PREFIX = "state-"


def lr_at(step: int, tcfg: TrainConfig) -> float:
    """Linear warm-up, constant, then linear decay to zero over the last fifth."""
    if step < tcfg.warmup:
        return tcfg.lr * (step + 1) / tcfg.warmup
    decay_start = int(0.8 * tcfg.steps)
    if step >= decay_start:
        return tcfg.lr * max(0.0, (tcfg.steps - step) / max(1, tcfg.steps - decay_start))
    return tcfg.lr


@torch.no_grad()
def estimate_scales(cc: Crosscoder, source, batch_size: int) -> torch.Tensor:
    """Per (model, layer): sqrt(d_in) / mean row norm, from a batch no training step uses."""
    x = source.batch(-1, max(batch_size, 1024)).float()
    norms = x.norm(dim=-1).mean(0)  # [models, layers]
    return math.sqrt(cc.cfg.d_in) / norms.clamp(min=1e-8)


# ------------------------------------------------------------------------------ saved state

def _state_dirs(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.glob(f"{STATE_PREFIX}*"):
        if p.is_dir() and p.name[len(STATE_PREFIX):].isdigit() and (p / "state.json").is_file():
            out.append((int(p.name[len(STATE_PREFIX):]), p))
    return sorted(out)


def save_state(folder: Path, cc: Crosscoder, opt, since_fired: torch.Tensor, step: int, meta: dict) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_PREFIX}{step:08d}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in cc.state_dict().items()}
    tensors["since_fired"] = since_fired.cpu()
    params = list(cc.parameters())
    for i, p in enumerate(params):
        for key, value in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{key}"] = value.detach().cpu().contiguous().reshape(value.shape)
    save_file(tensors, str(tmp / "state.safetensors"))
    with open(tmp / "state.safetensors", "rb") as f:
        os.fsync(f.fileno())
    text = dumps({**meta, "step": step}) + "\n"
    atomic_write(tmp / "state.json", lambda f: f.write(text.encode()))  # written last: marks the folder whole
    final = folder / f"{STATE_PREFIX}{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old_step, old in _state_dirs(folder):  # keep only the newest state
        if old_step < step:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: Path, cc: Crosscoder, opt) -> tuple[torch.Tensor, dict]:
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    cc.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    params = list(cc.parameters())
    for i, p in enumerate(params):
        state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if state:
            opt.state[p] = state
    return tensors["since_fired"], meta


# ------------------------------------------------------------------------------ the loop

def train_crosscoder(cc: Crosscoder, source, tcfg: TrainConfig, folder=None, resume: bool = True,
                     on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train `cc` in place for tcfg.steps steps; returns {"history", "resumed_from", "seconds", ...}.
    `on_step(step, metrics)` runs after each finished step (and its save): a hook for progress
    reporting, or for a test to interrupt training at a chosen step."""
    want = (cc.cfg.n_models, cc.cfg.n_layers, cc.cfg.d_in)
    got = (source.n_models, source.n_layers, source.d_in)
    if want != got:
        raise CrosscoderError(f"the activation source gives (models, layers, d_in) {got} but the crosscoder expects {want}")
    folder = Path(folder) if folder is not None else None
    opt = torch.optim.Adam(cc.parameters(), lr=tcfg.lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(cc.cfg.d_latent, dtype=torch.long)
    meta = {"crosscoder": cc.cfg.to_dict(), "train": {k: v for k, v in tcfg.to_dict().items() if k != "show_progress"},
            "source": source.describe(), "history": []}
    start, resumed_from = 0, None
    states = _state_dirs(folder) if folder is not None and resume else []
    if states:
        step, path = states[-1]
        saved = json.loads((path / "state.json").read_text())
        for key in ("crosscoder", "train", "source"):
            if json.loads(dumps(saved.get(key))) != json.loads(dumps(meta[key])):
                raise CrosscoderError(f"{folder} holds training state of a different {key} setup; "
                                      "use another folder or pass resume=False (--fresh) to start over")
        since_fired, saved = load_state(path, cc, opt)
        meta["history"] = saved.get("history", [])
        start = resumed_from = saved["step"]
    elif tcfg.normalize:
        cc.input_scale.copy_(estimate_scales(cc, source, tcfg.batch_size))

    from tqdm.auto import tqdm

    cc.train()
    t0 = time.perf_counter()
    bar = tqdm(total=tcfg.steps, initial=start, desc=f"crosscoder ({cc.cfg.loss})", disable=not tcfg.show_progress)
    metrics: dict = {}
    for step in range(start, tcfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tcfg)
        x = cc.scale_in(source.batch(step, tcfg.batch_size).float())
        dead = since_fired >= cc.cfg.dead_after
        l1_scale = min(1.0, (step + 1) / tcfg.l1_warmup) if tcfg.l1_warmup else 1.0
        loss, metrics, f = training_loss(cc, x, dead, l1_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(cc.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            fired = (f > 0).any(0)
            since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + 1)
        done = step + 1
        if done % tcfg.log_every == 0 or done == tcfg.steps:
            metrics["dead_fraction"] = float((since_fired >= cc.cfg.dead_after).float().mean())
            meta["history"].append({"step": done, **{k: round(v, 6) for k, v in metrics.items()}})
            bar.set_postfix(loss=f"{metrics['loss']:.4g}", l0=f"{metrics['l0']:.1f}")
        bar.update(1)
        if folder is not None and (done % tcfg.save_every == 0 or done == tcfg.steps):
            save_state(folder, cc, opt, since_fired, done, meta)
        if on_step is not None:
            on_step(done, metrics)
    bar.close()
    cc.eval()
    result = {"history": meta["history"], "resumed_from": resumed_from, "steps": tcfg.steps,
              "seconds": time.perf_counter() - t0, "dead_fraction": float((since_fired >= cc.cfg.dead_after).float().mean())}
    if folder is not None:
        save_crosscoder(cc, folder / "crosscoder", extra={"train": meta["train"], "source": meta["source"]})
    return result
