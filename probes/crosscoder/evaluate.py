"""How well a crosscoder reconstructs, per model: explained variance / FVU, L0, dead fraction,
and the cross-entropy and KL when its reconstruction replaces the real activation in the model.

    evaluate(cc, batches)                                    # from raw activation batches
    spliced_losses(cc, base, aligned, tokens, mask)          # on real models, per model
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from probes.crosscoder.config import CrosscoderError
from probes.crosscoder.model import Crosscoder


@torch.no_grad()
def evaluate(cc: Crosscoder, batches) -> dict:
    """FVU and explained variance per model (over all its layers), mean L0, and the fraction
    of latents that never fired on these batches."""
    cc.eval()
    m = cc.cfg.n_models
    err = torch.zeros(m, dtype=torch.float64)
    sq, total, n_rows, l0 = torch.zeros(m, cc.cfg.n_layers, cc.cfg.d_in, dtype=torch.float64), torch.zeros(m, dtype=torch.float64), 0, 0.0
    sum_x = torch.zeros_like(sq)
    fired = torch.zeros(cc.cfg.d_latent, dtype=torch.bool)
    for raw in batches:
        cc.check_input(raw)
        x = cc.scale_in(raw.float())
        f = cc.encode(x, batch_topk=False)
        recon = cc.decode(f)
        err += (recon - x).pow(2).flatten(2).sum(-1).sum(0).double()
        sum_x += x.sum(0).double()
        sq += x.pow(2).sum(0).double()
        n_rows += x.shape[0]
        l0 += float((f > 0).float().sum())
        fired |= (f > 0).any(0)
    if n_rows == 0:
        raise CrosscoderError("no activation rows to evaluate the crosscoder on")
    total = (sq - sum_x.pow(2) / n_rows).flatten(1).sum(-1)  # total variance per model
    fvu = (err / total.clamp(min=1e-12)).float()
    names = list(cc.cfg.models)
    return {"fvu": dict(zip(names, fvu.tolist())), "explained_variance": dict(zip(names, (1 - fvu).tolist())),
            "l0": l0 / n_rows, "dead_fraction": float((~fired).float().mean()), "rows": n_rows}


def _layers_of(hooks) -> list[int]:
    from probes.activations import layer_of

    return [layer_of(h) for h in hooks]


@torch.no_grad()
def spliced_losses(cc: Crosscoder, base, aligned, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                   hooks=None, batch_size: int = 16) -> dict:
    """Per model: next-token CE clean, CE with the reconstruction spliced in at every hooked
    layer, and KL(clean || spliced), averaged over real predicted positions. Both models run
    first to get both streams (the shared encoder needs both), then each model is rerun with its
    own reconstruction in place of its activations."""
    hooks = list(hooks or cc.cfg.hooks)
    if len(hooks) != cc.cfg.n_layers:
        raise CrosscoderError(f"the crosscoder reads {cc.cfg.n_layers} layer(s) but {len(hooks)} hooks were named; "
                              "give the hooks it was trained on")
    models = {"base": base, "aligned": aligned}
    for model in models.values():
        model.check_hook_names(hooks)
        if model.cfg.d_model != cc.cfg.d_in and any(".hook_resid" in h for h in hooks):
            raise CrosscoderError(f"the crosscoder reads d_in {cc.cfg.d_in} but the model's d_model is {model.cfg.d_model}")
    mask = torch.ones_like(tokens) if mask is None else mask
    sums = {role: {"ce_clean": 0.0, "ce_spliced": 0.0, "kl": 0.0} for role in models}
    count = 0
    for start in range(0, len(tokens), batch_size):
        tok, msk = tokens[start : start + batch_size], mask[start : start + batch_size]
        clean, acts = {}, []
        for role, model in models.items():
            logits, cache = model.run_with_cache(tok, attention_mask=msk, names_filter=hooks)
            clean[role] = logits.float()
            acts.append(torch.stack([cache[h].float() for h in hooks], 1))  # [b, layers, pos, d]
        x = torch.stack(acts, 1).permute(0, 3, 1, 2, 4)  # [b, pos, models, layers, d]
        b, pos = x.shape[:2]
        recon = cc.reconstruct(x.reshape(b * pos, *x.shape[2:])).reshape(x.shape)
        pred = msk[:, 1:].bool()
        count += int(pred.sum())
        for m, (role, model) in enumerate(models.items()):
            def splice(act, hook, m=m):
                return recon[:, :, m, hooks.index(hook.name)].to(act.dtype)

            spliced = model.run_with_hooks(tok, attention_mask=msk, fwd_hooks=[(h, splice) for h in hooks]).float()
            target = tok[:, 1:]
            for key, logits in (("ce_clean", clean[role]), ("ce_spliced", spliced)):
                ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none")
                sums[role][key] += float(ce[pred].sum())
            lp_c, lp_s = F.log_softmax(clean[role][:, :-1], -1), F.log_softmax(spliced[:, :-1], -1)
            sums[role]["kl"] += float((lp_c.exp() * (lp_c - lp_s)).sum(-1)[pred].sum())
    if count == 0:
        raise CrosscoderError("no predicted positions to measure spliced losses on (contexts of one token?)")
    return {role: {k: v / count for k, v in s.items()} for role, s in sums.items()}
