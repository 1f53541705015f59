"""Training progress: loss, L0 and explained variance every few steps, printed and kept.

SAELens's own progress bar shows only the losses, so we wrap the SAE's `training_forward_pass`
(the one call every trainer makes per step, the same seam SAELens uses for torch.compile) and
measure the batch it just reconstructed. Nothing about training changes.
"""

from __future__ import annotations

import time

import torch


def step_metrics(out) -> dict:
    """Loss, L0, explained variance and MSE of one SAELens TrainStepOutput."""
    x = out.sae_in.float()
    err = (out.sae_out.float() - x).pow(2).sum(-1)
    total = (x - x.mean(0)).pow(2).sum(-1)
    acts = out.feature_acts
    acts = acts.to_dense() if acts.is_sparse else acts
    return {"loss": float(out.loss.item()), "l0": float((acts != 0).float().sum(-1).mean()),
            "explained_variance": float(1 - err.mean() / total.mean()),
            "mse": float(err.mean() / x.shape[-1])}


class Progress:
    """Attach to a TrainingSAE before training; `history` holds one dict per logged step."""

    def __init__(self, sae, total_steps: int, batch_tokens: int, every: int = 50, show: bool = True):
        self.total_steps, self.batch_tokens = total_steps, batch_tokens
        self.every, self.show = max(1, every), show
        self.history: list[dict] = []
        self.step = 0
        self.started = time.perf_counter()
        inner = sae.training_forward_pass

        def forward(step_input):
            out = inner(step_input)
            self.step += 1
            if self.step % self.every == 0 or self.step == self.total_steps:
                with torch.no_grad():
                    self._log(step_metrics(out))
            return out

        sae.training_forward_pass = forward

    def _log(self, metrics: dict) -> None:
        elapsed = time.perf_counter() - self.started
        row = {"step": self.step, "tokens": self.step * self.batch_tokens, "seconds": round(elapsed, 2), **metrics}
        self.history.append(row)
        if self.show:
            from tqdm.auto import tqdm

            tqdm.write(f"step {self.step}/{self.total_steps}  tokens {row['tokens']:,}  loss {metrics['loss']:.4g}  "
                       f"L0 {metrics['l0']:.1f}  EV {metrics['explained_variance']:.3f}  ({elapsed:.0f}s)")

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}
