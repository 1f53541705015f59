"""Per-latent diffing statistics.

relative_norm[j] = ||d_j^aligned|| / (||d_j^base|| + ||d_j^aligned||): 0 base-only, 0.5 shared,
1 aligned-only. cosine[j] is the cosine between the latent's two decoder vectors.

Latent Scaling (Minder et al. 2025). A latent that looks aligned-only (its base decoder ~0) may
be an artefact of the L1 loss: the concept is in the base activations too, but the base decoder
was shrunk to zero ("complete shrinkage": the base *error* holds it) or another latent carries it
in the base model ("latent decoupling": the base *reconstruction* holds it). For latent j, with
direction d = its aligned decoder and activations f_j, fit per model m the least-squares scalar

    beta = sum_x f_j(x) <d, y_m(x)> / (||d||^2 sum_x f_j(x)^2)

for two targets: the error with latent j left out, eps_m = x_m - (xhat_m - f_j d_j^m), and the
reconstruction, r_m = xhat_m. nu_eps = beta_eps(base) / beta_eps(aligned) and nu_r =
beta_r(base) / beta_r(aligned). A truly aligned-only latent has both near 0 (the base holds
nothing along d); an artefact has one of them large.
"""

from __future__ import annotations

import torch

from probes.crosscoder.model import Crosscoder

BASE, ALIGNED = 0, 1
ARTEFACT_NU = 0.3  # a candidate with nu_eps or nu_r above this is flagged as an artefact


def relative_norms(cc: Crosscoder) -> torch.Tensor:
    n = cc.decoder_norms().detach()
    return n[:, ALIGNED] / (n[:, BASE] + n[:, ALIGNED]).clamp(min=1e-12)


def decoder_cosines(cc: Crosscoder) -> torch.Tensor:
    w = cc.W_dec.detach().flatten(2)
    return torch.nn.functional.cosine_similarity(w[:, BASE], w[:, ALIGNED], dim=-1)


@torch.no_grad()
def latent_scaling(cc: Crosscoder, batches, latents: torch.Tensor | list[int] | None = None) -> dict[str, torch.Tensor]:
    """beta_eps / beta_r per model and nu_eps / nu_r for `latents` (default: all), from an
    iterable of raw activation batches [batch, models, layers, d_in]."""
    cc.eval()
    idx = torch.arange(cc.cfg.d_latent) if latents is None else torch.as_tensor(latents, dtype=torch.long)
    d = cc.W_dec[idx, ALIGNED].flatten(1)  # [S, P]
    dec = cc.W_dec[idx].flatten(2)  # [S, models, P]
    d_dot_dec = torch.einsum("sp,smp->sm", d, dec)  # <d, d_j^m>
    sums = {key: torch.zeros(len(idx), cc.cfg.n_models, dtype=torch.float64) for key in ("eps", "r")}
    ff = torch.zeros(len(idx), dtype=torch.float64)
    for raw in batches:
        x = cc.scale_in(raw.float())
        f_all = cc.encode(x, batch_topk=False)
        recon = cc.decode(f_all)
        f = f_all[:, idx]  # [B, S]
        d_x = torch.einsum("bmp,sp->bsm", x.flatten(2), d)  # <d, x_m>
        d_r = torch.einsum("bmp,sp->bsm", recon.flatten(2), d)  # <d, xhat_m>
        own = f[:, :, None] * d_dot_dec[None]  # <d, f_j d_j^m>
        sums["eps"] += (f[:, :, None] * (d_x - d_r + own)).sum(0).double()
        sums["r"] += (f[:, :, None] * d_r).sum(0).double()
        ff += f.pow(2).sum(0).double()
    denom = (d.pow(2).sum(-1).double() * ff).clamp(min=1e-12)[:, None]
    out = {"latents": idx}
    for key, s in sums.items():
        beta = (s / denom).float()
        out[f"beta_{key}_base"], out[f"beta_{key}_aligned"] = beta[:, BASE], beta[:, ALIGNED]
        out[f"nu_{key}"] = beta[:, BASE] / beta[:, ALIGNED].where(beta[:, ALIGNED].abs() > 1e-6, torch.tensor(1e-6))
    out["fired"] = ff > 0
    return out


@torch.no_grad()
def latent_table(cc: Crosscoder, batches, aligned_only: float = 0.9, artefact_nu: float = ARTEFACT_NU) -> list[dict]:
    """One row per latent: relative norm, decoder cosine, and for latents whose relative norm is
    at least `aligned_only`, Latent Scaling's ratios and whether they flag an artefact."""
    rel, cos = relative_norms(cc), decoder_cosines(cc)
    cand = (rel >= aligned_only).nonzero().flatten()
    scaling = latent_scaling(cc, batches, cand) if len(cand) else None
    rows = [{"id": j, "relative_norm": float(rel[j]), "cosine": float(cos[j])} for j in range(cc.cfg.d_latent)]
    if scaling is not None:
        for i, j in enumerate(cand.tolist()):
            nu_eps, nu_r = float(scaling["nu_eps"][i]), float(scaling["nu_r"][i])
            rows[j].update({"nu_eps": nu_eps, "nu_r": nu_r, "beta_eps_base": float(scaling["beta_eps_base"][i]),
                            "beta_eps_aligned": float(scaling["beta_eps_aligned"][i]),
                            "beta_r_base": float(scaling["beta_r_base"][i]),
                            "beta_r_aligned": float(scaling["beta_r_aligned"][i]),
                            "fired": bool(scaling["fired"][i]),
                            "artefact": bool(scaling["fired"][i]) and max(nu_eps, nu_r) > artefact_nu})
    return rows
