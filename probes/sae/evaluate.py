"""Evaluate an SAE on held-out text: reconstruction (L0, explained variance, MSE), feature
health (dead and dense fractions) and the downstream cost of splicing it into the forward pass
(cross-entropy loss recovered against zero-ablation, KL divergence to the clean model).

    ev = evaluate_sae(sae, model, "blocks.3.hook_resid_post", corpus="stdlib-docs", tokens=8192)
    ev.metrics["ce_loss_recovered"], ev.density            # density: [d_sae] firing frequency

CE loss recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 when the SAE costs nothing,
0 when it is as bad as deleting the activation. For residual-stream hooks the model runs up to
the hook once and the three continuations (clean, spliced, zeroed) start from there.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from harness.errors import HarnessError
from probes.sae.io import check_fits

RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


@dataclass
class SAEEval:
    metrics: dict
    density: torch.Tensor  # [d_sae] fraction of evaluated tokens on which each feature fired

    def write(self, run, name: str = "eval") -> None:
        """Store the metrics (JSON) and the density (safetensors) in a run, metrics in its manifest too."""
        run.write_json(f"{name}.json", self.metrics)
        run.write_tensors(f"{name}_density.safetensors", {"density": self.density})
        run.manifest.setdefault("metrics", {}).update({f"{name}/{k}": v for k, v in self.metrics.items()
                                                      if isinstance(v, (int, float))})
        run.save_manifest()


def heldout_tokens(model, corpus, tokens: int, context_length: int = 128, split: str = "heldout",
                   seed: int = 0) -> torch.Tensor:
    """[n, context_length] token ids of a corpus split (held-out by default), n = ceil(tokens / L)."""
    from harness.data import load_corpus, pack

    n = max(1, math.ceil(tokens / context_length))
    contexts = list(itertools.islice(pack(load_corpus(corpus), model.tokenizer, context_length, split=split,
                                          seed=seed, shuffle_buffer=min(1024, 4 * n)), n))
    if not contexts:
        raise HarnessError(f"the {split} split of {corpus!r} yields no context of {context_length} tokens; "
                           "use a larger corpus or a shorter context")
    return torch.from_numpy(np.stack(contexts).astype(np.int64))


def trained_skip(sae) -> int:
    """The leading positions the SAE was trained without (SAELens's seqpos_slice start), 0 if none."""
    seqpos = getattr(sae.cfg.metadata, "seqpos_slice", None) or (None,)
    return int(seqpos[0] or 0)


@torch.inference_mode()
def evaluate_sae(sae, model, hook: str | None = None, *, tokens=None, corpus="stdlib-docs", n_tokens: int = 8192,
                 context_length: int = 128, batch_size: int = 8, dense_threshold: float = 0.1,
                 skip_positions: int | None = None, max_norm: float | None = None,
                 progress: bool = False) -> SAEEval:
    """Evaluate `sae` on `hook` of `model` over `tokens` ([n, pos] ids) or n_tokens of the held-out corpus.

    Positions before `skip_positions` (default: those the SAE was trained without) keep their clean
    activations in the spliced and ablated runs and are left out of the reconstruction metrics;
    so do activations with an L2 norm above `max_norm` (default: the SAE's max_activation_norm)."""
    hook = check_fits(sae, model, hook)
    skip = trained_skip(sae) if skip_positions is None else skip_positions
    if max_norm is None:
        max_norm = getattr(sae.cfg.metadata, "max_activation_norm", None)
    if tokens is None:
        tokens = heldout_tokens(model, corpus, n_tokens, context_length)
    sae.eval()
    acc = _Totals(sae.cfg.d_sae)
    batches = range(0, len(tokens), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluating", unit="batch")
    for i in batches:
        batch = tokens[i:i + batch_size].to(_device(model))
        clean, spliced, zeroed, x, feats, recon = _three_runs(sae, model, hook, batch, skip, max_norm)
        keep = _kept(x, max_norm).reshape(-1)
        acc.add_recon(x.reshape(-1, x.shape[-1])[keep], feats.reshape(-1, feats.shape[-1])[keep],
                      recon.reshape(-1, recon.shape[-1])[keep])
        acc.add_logits(batch, clean, spliced, zeroed, model)
    metrics = {**acc.metrics(hook, dense_threshold), "skip_positions": skip, "max_norm": max_norm}
    return SAEEval(metrics, acc.fired / max(acc.n, 1))


def _kept(x: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Where the SAE applies: every position, or those with an activation norm up to max_norm."""
    if max_norm is None:
        return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    return x.float().norm(dim=-1) <= max_norm


def _three_runs(sae, model, hook, batch, skip: int, max_norm: float | None):
    """Clean, SAE-spliced and zero-ablated logits, plus the hook activations, features and
    reconstruction at the positions from `skip` on."""
    def encode(x):
        feats = sae.encode(x[:, skip:].to(sae.dtype))
        return feats, sae.decode(feats).to(x.dtype)

    def keep_head(x, tail):  # positions before skip, and activations above max_norm, stay clean
        tail = torch.where(_kept(x[:, skip:], max_norm)[..., None], tail, x[:, skip:])
        return torch.cat([x[:, :skip], tail], dim=1) if skip else tail

    m = RESID.match(hook)
    if m:  # run the shared prefix once, then three continuations from the hook
        start = int(m.group(1)) + (1 if m.group(2) == "post" else 0)
        x = model(batch, stop_at_layer=start) if start > 0 else _embedded(model, batch, hook)
        feats, recon = encode(x)
        run = lambda resid: model(resid, start_at_layer=start) if start < model.cfg.n_layers \
            else model.unembed_residual(resid)
        zeros = torch.zeros_like(recon)
        return run(x), run(keep_head(x, recon)), run(keep_head(x, zeros)), x[:, skip:], feats, recon
    store = {}

    def splice(act, hook):  # noqa: ARG001 (TransformerLens hook signature)
        store["x"] = act[:, skip:]
        store["feats"], store["recon"] = encode(act)
        return keep_head(act, store["recon"])

    def zero(act, hook):  # noqa: ARG001
        return keep_head(act, torch.zeros_like(act[:, skip:]))

    clean = model(batch)
    spliced = model.run_with_hooks(batch, fwd_hooks=[(hook, splice)])
    zeroed = model.run_with_hooks(batch, fwd_hooks=[(hook, zero)])
    return clean, spliced, zeroed, store["x"], store["feats"], store["recon"]


def _embedded(model, batch, hook):
    _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=1)
    return cache[hook]


class _Totals:
    """Running sums over batches, so evaluation memory does not grow with the token count."""

    def __init__(self, d_sae: int):
        self.fired = torch.zeros(d_sae, dtype=torch.float64)
        self.n = 0
        self.l0 = self.sq_err = self.sq_norm = 0.0
        self.sum_x = None
        self.ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
        self.kl = 0.0
        self.n_pred = 0

    def add_recon(self, x, feats, recon):
        x = x.reshape(-1, x.shape[-1]).double()
        if x.shape[0] != feats.reshape(-1, feats.shape[-1]).shape[0]:
            raise HarnessError("SAE features do not line up with the hook's positions")
        active = feats.reshape(-1, feats.shape[-1]) != 0
        self.fired += active.sum(0).double().cpu()
        self.l0 += float(active.sum())
        self.sq_err += float((recon.reshape(x.shape).double() - x).pow(2).sum())
        self.sq_norm += float(x.pow(2).sum())
        s = x.sum(0).cpu()
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.n += x.shape[0]
        self.d = x.shape[-1]

    def add_logits(self, tokens, clean, spliced, zeroed, model):
        # Next-token CE over every position that has a next token.
        for key, logits in (("clean", clean), ("spliced", spliced), ("zero", zeroed)):
            self.ce[key] += float(model.loss(logits.float(), tokens, per_token=True).sum())
        lp_clean = clean[:, :-1].float().log_softmax(-1)
        lp_spliced = spliced[:, :-1].float().log_softmax(-1)
        self.kl += float((lp_clean.exp() * (lp_clean - lp_spliced)).sum())
        self.n_pred += tokens.shape[0] * (tokens.shape[1] - 1)

    def metrics(self, hook: str, dense_threshold: float) -> dict:
        n = max(self.n, 1)
        # Variance about the mean over all evaluated tokens, as SAELens and the literature use.
        total_var = self.sq_norm - float(self.sum_x.pow(2).sum()) / n
        ce = {k: v / max(self.n_pred, 1) for k, v in self.ce.items()}
        gap = ce["zero"] - ce["clean"]
        density = self.fired / n
        return {
            "hook": hook, "n_tokens": self.n,
            "l0": self.l0 / n,
            "explained_variance": 1 - self.sq_err / total_var if total_var > 0 else float("nan"),
            "mse": self.sq_err / (n * self.d),
            "dead_fraction": float((density == 0).double().mean()),
            "dense_fraction": float((density > dense_threshold).double().mean()),
            "dense_threshold": dense_threshold,
            "ce_clean": ce["clean"], "ce_spliced": ce["spliced"], "ce_zero_ablated": ce["zero"],
            "ce_loss_recovered": (ce["zero"] - ce["spliced"]) / gap if gap != 0 else float("nan"),
            "kl_div": self.kl / max(self.n_pred, 1),
        }


def _device(model) -> torch.device:
    return next(model.parameters()).device
