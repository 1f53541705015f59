"""Atomic SAE training checkpoints, so a killed `sae train` resumes to the weights of an
uninterrupted run, or refuses.

A checkpoint is one folder, `checkpoints/step-NNNNNNNN/` in the run, holding the SAE's training
weights, SAELens's trainer state (optimizer, LR schedule, step counters, dead-feature statistics,
activation scaler) in SAELens's own layout (`SAETrainer.load_trainer_state` reads it), the
harness's progress (batches served, the training log) and, written last, `checkpoint.json`
naming every file with its SHA-256. The folder is assembled under a hidden staging name and
renamed into place in one step; older checkpoints are removed only after that. A kill at any
point leaves the previous checkpoint or the new one, never a mix. Resuming verifies the hashes
and refuses a damaged checkpoint with a one-line SAEError rather than training on from it.

Every write of a save goes through `_write`, `_rename` and `_remove` (tests inject failures there).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from probes.sae.io import SAEError

FOLDER = "checkpoints"
INDEX = "checkpoint.json"
WEIGHTS = "sae_weights.safetensors"
PROGRESS = "harness_state.json"
STAGING_PREFIX = ".checkpoint-staging-"


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def _remove(path: Path) -> None:
    shutil.rmtree(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def trainer_state_files(trainer) -> dict[str, bytes]:
    """SAELens's trainer-state files (what SAETrainer.save_trainer_state writes), as bytes."""
    from sae_lens.constants import ACTIVATION_SCALER_CFG_FILENAME, TRAINER_STATE_FILENAME

    if trainer.activation_scaler.whitening is not None:
        raise SAEError("checkpoints do not cover covariance whitening yet; use another normalisation")
    buf = io.BytesIO()
    torch.save({
        "optimizer": trainer.optimizer.state_dict(),
        "lr_scheduler": trainer.lr_scheduler.state_dict(),
        "n_training_samples": trainer.n_training_samples,
        "n_training_steps": trainer.n_training_steps,
        "act_freq_scores": trainer.act_freq_scores,
        "n_forward_passes_since_fired": trainer.n_forward_passes_since_fired,
        "n_frac_active_samples": trainer.n_frac_active_samples,
        "started_fine_tuning": trainer.started_fine_tuning,
        "coefficient_schedulers": {n: s.state_dict() for n, s in trainer.coefficient_schedulers.items()},
    }, buf)
    scaler = json.dumps({"scaling_factor": trainer.activation_scaler.scaling_factor, "has_whitening": False})
    return {TRAINER_STATE_FILENAME: buf.getvalue(), ACTIVATION_SCALER_CFG_FILENAME: scaler.encode()}


class Checkpoints:
    """The checkpoints of one SAE run (see the module docstring)."""

    def __init__(self, run_path: Path, every: int):
        self.run_path = Path(run_path)
        self.folder = self.run_path / FOLDER
        self.every = max(1, int(every))
        self.saved = 0

    def clean_staging(self) -> None:
        """Remove half-assembled checkpoints a killed save left behind (never a committed one)."""
        for p in self.run_path.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)

    def committed(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and p.name.startswith("step-"))

    def latest(self) -> Path | None:
        """The newest committed checkpoint, verified; SAEError when it is damaged."""
        found = self.committed()
        if not found:
            return None
        newest = found[-1]
        index = newest / INDEX
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
            files = meta["files"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SAEError(f"checkpoint {newest} has no readable {INDEX}; it is damaged: delete {newest} to resume "
                           "from an earlier one, or the run folder to start over") from None
        for name, digest in files.items():
            path = newest / name
            if not path.is_file() or _sha256(path) != digest:
                raise SAEError(f"checkpoint {newest} is damaged ({name} does not match its hash in {INDEX}); "
                               f"refusing to resume from it: delete {newest} or the run folder to start over")
        return newest

    def save(self, trainer, progress: dict) -> Path:
        """Write a checkpoint of `trainer` (and the harness `progress` dict) atomically."""
        from safetensors.torch import save

        step = int(trainer.n_training_steps)
        staging = self.run_path / f"{STAGING_PREFIX}{step}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        state = {k: v.detach().cpu().contiguous() for k, v in trainer.sae.state_dict().items()}
        files = {WEIGHTS: save(state), **trainer_state_files(trainer),
                 PROGRESS: json.dumps({"step": step, **progress}).encode()}
        for name, data in files.items():
            _write(staging / name, data)
        index = {"step": step, "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
        _write(staging / INDEX, json.dumps(index, indent=1).encode())
        self.folder.mkdir(exist_ok=True)
        target = self.folder / f"step-{step:08d}"
        _rename(staging, target)
        for old in self.committed():
            if old != target:
                _remove(old)
        self.saved += 1
        return target

    def restore(self, path: Path, trainer) -> dict:
        """Load a verified checkpoint into `trainer` (weights and SAELens trainer state); returns
        the harness progress dict saved with it."""
        from safetensors.torch import load_file

        trainer.sae.load_state_dict(load_file(str(path / WEIGHTS)))
        trainer.load_trainer_state(path)  # SAELens's own loader
        return json.loads((path / PROGRESS).read_text(encoding="utf-8"))

    def remove_all(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.clean_staging()
