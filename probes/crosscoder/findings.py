"""A trained crosscoder's diffing findings: its aligned-only latents (relative norm >= 0.9 and
not flagged by Latent Scaling), ranked by how often they fire, each with its top contexts.

    f = crosscoder_findings(cc, base, aligned, texts)   # probes.findings.Findings("crosscoder", ...)
"""

from __future__ import annotations

import torch

from probes.crosscoder.data import contexts_from_texts
from probes.crosscoder.latents import ARTEFACT_NU, latent_table
from probes.crosscoder.model import Crosscoder


@torch.no_grad()
def crosscoder_findings(cc: Crosscoder, base, aligned, texts, n_contexts: int = 5, aligned_only: float = 0.9,
                        length: int = 64, top: int = 25):
    from probes.compat import check_pair
    from probes.crosscoder.config import CrosscoderError
    from probes.findings import Findings

    check_pair(base, aligned, what="a crosscoder")
    if not cc.cfg.hooks:
        raise CrosscoderError("this crosscoder does not record the hooks it reads; retrain it with hooks set")
    if base.cfg.d_model != cc.cfg.d_in:
        raise CrosscoderError(f"the crosscoder reads d_in {cc.cfg.d_in} but the models' d_model is {base.cfg.d_model}")
    texts = list(texts)
    tokens, mask = contexts_from_texts(base, texts, length)
    hooks = list(cc.cfg.hooks)
    per_text, rows = [], []
    for i in range(len(texts)):
        acts = []
        for model in (base, aligned):
            _, cache = model.run_with_cache(tokens[i : i + 1], attention_mask=mask[i : i + 1], names_filter=hooks)
            acts.append(torch.stack([cache[h][0].float() for h in hooks], 1))  # [pos, layers, d]
        x = torch.stack(acts, 1)[mask[i].bool()]  # [pos, models, layers, d]
        x = x[1:] if len(x) > 1 else x  # the BOS position is an attention sink in both models
        rows.append(x)
        per_text.append(cc.encode(cc.scale_in(x), batch_topk=False).max(0).values)  # [latents]
    table = latent_table(cc, rows, aligned_only=aligned_only)
    strength = torch.stack(per_text)  # [texts, latents]
    fires = (strength > 0).float().mean(0)
    latents = []
    for row in table:
        if row["relative_norm"] < aligned_only or row.get("artefact") or not row.get("fired"):
            continue
        j = row["id"]
        order = strength[:, j].argsort(descending=True)[:n_contexts]
        contexts = [texts[t] for t in order.tolist() if strength[t, j] > 0]
        latents.append({"id": j, "score": float(fires[j]), "relative_norm": row["relative_norm"],
                        "nu_eps": row["nu_eps"], "nu_r": row["nu_r"], "contexts": contexts})
    latents.sort(key=lambda x: -x["score"])
    n_artefacts = sum(1 for r in table if r.get("artefact"))
    # every candidate's Latent Scaling numbers, artefacts included, so a reader can see the cut
    scaling = [{k: r[k] for k in SCALING_KEYS} for r in table if "nu_eps" in r]
    return Findings("crosscoder", latents=latents[:top],
                    extra={"n_aligned_only": len(latents), "n_artefacts": n_artefacts, "hooks": hooks,
                           "relative_norms": [round(r["relative_norm"], 4) for r in table], "scaling": scaling,
                           "aligned_only": aligned_only, "artefact_nu": ARTEFACT_NU})


SCALING_KEYS = ("id", "relative_norm", "cosine", "nu_eps", "nu_r", "fired", "artefact")
