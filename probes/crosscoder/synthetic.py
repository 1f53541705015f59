"""A synthetic base/aligned pair whose answer is known by construction.

Both "models" write the same shared sparse features into their residual streams (same unit
directions, same coefficients on the same row); the aligned one also writes `n_planted` extra
features that the base never has. `n_weak` of the shared features are written by the base at
`weak_scale` of the aligned strength: they exist in both, so a latent that calls one of them
"aligned-only" is an artefact. `n_decoupled` further shared features fire on the same rows in
both models but with independent strengths: one shared latent cannot fit both, and the L1 loss
(which charges a latent per model it writes to) is as happy to split such a feature into a
base-only and an aligned-only latent - a false "aligned-only" latent whose concept the base
reconstruction still holds, the case Latent Scaling (nu_r) exists to catch.

SAELens's `sae_lens.synthetic` makes one stream with known features; we need two streams that
share coefficients row by row, so the generator is written here (a few lines).

    pair = SyntheticPair(d_in=32, n_shared=48, n_planted=4)
    x = pair.batch(step=0, batch_size=512)   # [512, 2, 1, 32]; the same (step, size) -> same rows
    pair.planted                             # [n_planted, d_in] the aligned-only directions
"""

from __future__ import annotations

import torch


class SyntheticPair:
    def __init__(self, d_in: int = 32, n_shared: int = 48, n_planted: int = 4, n_weak: int = 0, n_decoupled: int = 0,
                 weak_scale: float = 0.3, p_shared: float = 0.06, p_planted: float = 0.08, noise: float = 0.01,
                 seed: int = 0):
        self.d_in, self.n_shared, self.n_planted, self.n_weak = d_in, n_shared, n_planted, n_weak
        self.n_decoupled = n_decoupled
        self.weak_scale, self.p_shared, self.p_planted, self.noise, self.seed = weak_scale, p_shared, p_planted, noise, seed
        g = torch.Generator().manual_seed(seed)
        dirs = torch.randn(n_shared + n_planted, d_in, generator=g)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        self.shared, self.planted = dirs[:n_shared], dirs[n_shared:]
        self.weak = self.shared[:n_weak]  # the shared features the base writes weakly
        self.decoupled = self.shared[n_weak : n_weak + n_decoupled]  # same rows, independent strengths
        self.n_models, self.n_layers = 2, 1

    def describe(self) -> dict:
        return {"source": "synthetic", **{k: getattr(self, k) for k in (
            "d_in", "n_shared", "n_planted", "n_weak", "n_decoupled", "weak_scale", "p_shared", "p_planted", "noise", "seed")}}

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 1)
        n = self.n_shared + self.n_planted
        p = torch.tensor([self.p_shared] * self.n_shared + [self.p_planted] * self.n_planted)
        on = torch.rand(batch_size, n, generator=g) < p
        coef = on * (0.5 + torch.rand(batch_size, n, generator=g))  # magnitudes in [0.5, 1.5)
        cs, cp = coef[:, : self.n_shared], coef[:, self.n_shared :]
        base_coef = cs.clone()
        base_coef[:, : self.n_weak] *= self.weak_scale
        base = base_coef @ self.shared
        a_coef = cs.clone()
        span = slice(self.n_weak, self.n_weak + self.n_decoupled)
        a_coef[:, span] = on[:, span] * (0.5 + torch.rand(batch_size, self.n_decoupled, generator=g))
        aligned = a_coef @ self.shared + cp @ self.planted
        noise = self.noise * torch.randn(2, batch_size, self.d_in, generator=g)
        return torch.stack([base + noise[0], aligned + noise[1]], 1)[:, :, None, :]
