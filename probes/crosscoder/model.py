"""The crosscoder module: a shared encoder over all models' (and layers') activations, and one
decoder per model.

Shapes: a row of input is x [models, layers, d_in]. Latent j has one decoder vector per model,
W_dec[j, m] of shape [layers, d_in]; its activation f_j is shared. The inputs are scaled per
(model, layer) by `input_scale` (so every stream has mean row norm sqrt(d_in)); everything inside
works in that scaled space, and `reconstruct` returns the caller's units.

BatchTopK (Minder et al. 2025): during training keep the k * batch largest values of
f_j * sum_m ||W_dec[j, m]|| across the whole batch; at inference a row keeps the latents whose
score clears `threshold`, a running estimate of the smallest score training kept, so one row's
code does not depend on the rest of its batch.
"""

from __future__ import annotations

import torch
from torch import nn

from probes.crosscoder.config import CrosscoderConfig, CrosscoderError

THRESHOLD_MOMENTUM = 0.99


class Crosscoder(nn.Module):
    def __init__(self, cfg: CrosscoderConfig):
        super().__init__()
        self.cfg = cfg
        m, L, d, h = cfg.n_models, cfg.n_layers, cfg.d_in, cfg.d_latent
        g = torch.Generator().manual_seed(cfg.seed)
        dec = torch.randn(h, m, L, d, generator=g)
        # Each model's decoder starts at norm 0.1 per latent; the encoder starts as its transpose,
        # so every latent begins by reading roughly the direction it writes.
        dec = 0.1 * dec / dec.flatten(2).norm(dim=-1)[..., None, None]
        self.W_dec = nn.Parameter(dec)
        self.W_enc = nn.Parameter(dec.permute(1, 2, 3, 0).clone())
        self.b_enc = nn.Parameter(torch.zeros(h))
        self.b_dec = nn.Parameter(torch.zeros(m, L, d))
        self.register_buffer("input_scale", torch.ones(m, L))
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not yet estimated

    # ------------------------------------------------------------------ shapes and scaling

    def check_input(self, x: torch.Tensor) -> None:
        want = (self.cfg.n_models, self.cfg.n_layers, self.cfg.d_in)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise CrosscoderError(f"crosscoder input must be [batch, {', '.join(map(str, want))}] "
                                  f"(models, layers, d_in); got {tuple(x.shape)}")

    def scale_in(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.input_scale[None, :, :, None].to(x.dtype)

    def scale_out(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.input_scale[None, :, :, None].to(x.dtype)

    def decoder_norms(self) -> torch.Tensor:
        """[d_latent, models]: the norm of each latent's decoder in each model (over its layers)."""
        return self.W_dec.flatten(2).norm(dim=-1)

    # ------------------------------------------------------------------ encode / decode

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bmld,mldh->bh", x, self.W_enc) + self.b_enc

    def encode(self, x: torch.Tensor, batch_topk: bool | None = None) -> torch.Tensor:
        """Latent activations [batch, d_latent] of scaled input x. BatchTopK selects across the
        batch in training mode (batch_topk=None follows self.training), by threshold otherwise."""
        f = torch.relu(self.pre_acts(x))
        if self.cfg.loss != "batchtopk":
            return f
        score = f * self.decoder_norms().sum(-1)
        if batch_topk is None:
            batch_topk = self.training
        if batch_topk:
            n_keep = min(self.cfg.k * f.shape[0], score.numel())
            flat = score.flatten()
            kept = flat.topk(n_keep, sorted=False)
            mask = torch.zeros_like(flat, dtype=torch.bool)
            mask[kept.indices] = True
            mask = mask.view_as(f) & (score > 0)
            if self.training:
                self._update_threshold(score[mask])
            return f * mask
        if float(self.threshold) < 0:
            raise CrosscoderError("this BatchTopK crosscoder has no inference threshold yet (it was never trained); "
                                  "train it, or encode with batch_topk=True")
        return f * (score > self.threshold)

    @torch.no_grad()
    def _update_threshold(self, kept_scores: torch.Tensor) -> None:
        if kept_scores.numel() == 0:
            return
        low = kept_scores.min().detach().to(self.threshold.dtype)
        if float(self.threshold) < 0:
            self.threshold.copy_(low)
        else:
            self.threshold.mul_(THRESHOLD_MOMENTUM).add_((1 - THRESHOLD_MOMENTUM) * low)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bh,hmld->bmld", f, self.W_dec) + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, latents) of scaled input x [batch, models, layers, d_in]."""
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def reconstruct(self, x_raw: torch.Tensor) -> torch.Tensor:
        """The reconstruction in the input's own units (inference mode)."""
        self.check_input(x_raw)
        recon = self.decode(self.encode(self.scale_in(x_raw.float()), batch_topk=False))
        return self.scale_out(recon)
