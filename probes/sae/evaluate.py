"""Evaluate an SAE on held-out text: reconstruction (L0, explained variance, MSE), feature
health (dead and dense fractions) and the downstream cost of splicing it into the forward pass
(cross-entropy loss recovered against zero-ablation, KL divergence to the clean model).

    ev = evaluate_sae(sae, model, "blocks.3.hook_resid_post", corpus="stdlib-docs", n_tokens=8192)
    ev.metrics["ce_loss_recovered"], ev.density            # density: [d_sae] firing frequency
    ev.warnings                                            # e.g. EV high while CE recovered is low

Which positions: the ones the SAE is meant for. Positions its training left out (probes.sae.
outliers: the first position, special tokens, massive-norm tokens, as recorded in its cfg.json)
keep their clean activations in the spliced and the zero-ablated runs, and are left out of the
reconstruction metrics; their own figures are reported apart under `excluded/...`.

Metric definitions follow SAELens's evals (sae_lens.evals):
- explained_variance = 1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2), over all evaluated tokens;
- mse = E||x - x_hat||^2: squared error summed over the d_in dimensions, averaged over tokens
  (SAELens's "mse"); `mse_per_dim` is that divided by d_in (the harness's mse before 2026-12);
- l0 = mean number of nonzero features per token;
- ce_loss_score (alias ce_loss_recovered) = (CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 when
  the SAE costs nothing, 0 when it is as bad as zeroing the activation; ce_clean / ce_spliced /
  ce_zero_ablated are SAELens's ce_loss_without_sae / ce_loss_with_sae / ce_loss_with_ablation;
- kl_div (SAELens's kl_div_with_sae) = KL(clean || spliced) per predicted token;
  kl_div_score = (KL_zero - KL_spliced) / KL_zero.
CE loss recovered and KL are always computed next to explained variance, and `warnings` says when
they disagree (EV >= EV_HIGH while CE recovered < CE_LOW): the signature of an SAE that only
reconstructs a few huge activations. For residual-stream hooks the model runs up to the hook once
and the three continuations (clean, spliced, zeroed) start from there.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from harness.devices import device_of
from harness.errors import HarnessError
from probes.sae.io import check_fits
from probes.sae.outliers import Exclusion, special_token_ids

RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
EV_HIGH = 0.9  # explained variance at or above this ...
CE_LOW = 0.5  # ... with CE loss recovered below this is reported as a disagreement


def disagreement(metrics: dict) -> str | None:
    """The warning for metrics whose explained variance and CE loss recovered disagree, or None."""
    ev, ce = metrics.get("explained_variance"), metrics.get("ce_loss_recovered")
    if ev is None or ce is None or math.isnan(ev) or math.isnan(ce):
        return None
    if ev >= EV_HIGH and ce < CE_LOW:
        return (f"explained variance {ev:.3f} is high but CE loss recovered is only {ce:.3f} (KL "
                f"{metrics.get('kl_div', float('nan')):.3g}): the SAE reconstructs a few huge activations "
                "(attention sinks / outliers) and little else; leave them out (the default: skip_positions=1, "
                "special tokens, norm_ratio) rather than trusting the EV")
    return None


@dataclass
class SAEEval:
    metrics: dict
    density: torch.Tensor  # [d_sae] fraction of evaluated tokens on which each feature fired

    @property
    def warnings(self) -> list[str]:
        return list(self.metrics.get("warnings") or [])

    def write(self, run, name: str = "eval") -> None:
        """Store the metrics (JSON) and the density (safetensors) in a run, metrics in its manifest
        too, and any warning in the manifest's `warnings` list."""
        run.write_json(f"{name}.json", self.metrics)
        run.write_tensors(f"{name}_density.safetensors", {"density": self.density})
        run.add_metrics({f"{name}/{k}": v for k, v in self.metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for w in self.warnings:
            run.add_warning(f"{name}: {w}")  # once: a rerun that says it again adds nothing


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
    return Exclusion.of_sae(sae).skip_positions


def eval_exclusion(sae, model=None, *, skip_positions: int | None = None, max_norm: float | None = None,
                   exclude_special: bool | None = None) -> Exclusion:
    """The SAE's recorded exclusion, with any of its rules overridden (exclude_special=True uses the
    model tokenizer's special tokens, False none)."""
    ex = Exclusion.of_sae(sae)
    if skip_positions is not None:
        ex.skip_positions = int(skip_positions)
    if max_norm is not None:
        ex.max_norm = float(max_norm) if max_norm > 0 else None
    if exclude_special is not None:
        ex.special_tokens = special_token_ids(getattr(model, "tokenizer", None)) if exclude_special else ()
    return ex


@torch.inference_mode()
def evaluate_sae(sae, model, hook: str | None = None, *, tokens=None, corpus="stdlib-docs", n_tokens: int = 8192,
                 context_length: int = 128, batch_size: int = 8, dense_threshold: float = 0.1,
                 skip_positions: int | None = None, max_norm: float | None = None,
                 exclude_special: bool | None = None, progress: bool = False) -> SAEEval:
    """Evaluate `sae` on `hook` of `model` over `tokens` ([n, pos] ids) or n_tokens of the held-out corpus.

    The positions the SAE was trained without (its recorded exclusion; override with skip_positions,
    max_norm (0: no norm rule) and exclude_special) keep their clean activations in the spliced and
    ablated runs; the reconstruction metrics cover the other positions, and `excluded/...` the
    left-out ones (what the SAE would do on them)."""
    hook = check_fits(sae, model, hook)
    ex = eval_exclusion(sae, model, skip_positions=skip_positions, max_norm=max_norm, exclude_special=exclude_special)
    if tokens is None:
        tokens = heldout_tokens(model, corpus, n_tokens, context_length)
    sae.eval()
    kept_acc, out_acc = _Totals(sae.cfg.d_sae), _Totals(sae.cfg.d_sae)
    logits_acc = _Logits()
    counts: dict = {}
    batches = range(0, len(tokens), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluating", unit="batch")
    for i in batches:
        batch = tokens[i:i + batch_size].to(device_of(model))
        clean, spliced, zeroed, x, feats, recon, masks = _three_runs(sae, model, hook, batch, ex)
        for key in ("position", "special", "norm", "kept"):
            counts[key] = counts.get(key, 0) + int(masks[key].sum())
        kept = masks["kept"]
        kept_acc.add_recon(x[kept], feats[kept], recon[kept])
        out_acc.add_recon(x[~kept], feats[~kept], recon[~kept])
        logits_acc.add(batch, clean, spliced, zeroed, model)
    metrics = {**kept_acc.metrics(hook, dense_threshold), **logits_acc.metrics(),
               "skip_positions": ex.skip_positions, "max_norm": ex.max_norm,
               "special_tokens": list(ex.special_tokens), "norm_ratio": ex.norm_ratio}
    excluded = out_acc.metrics(hook, dense_threshold) if out_acc.n else {}
    metrics["excluded/n_tokens"] = out_acc.n
    for key in ("explained_variance", "mse", "l0", "mean_norm"):
        if key in excluded:
            metrics[f"excluded/{key}"] = excluded[key]
    for key in ("position", "special", "norm"):
        metrics[f"excluded/by_{key}"] = counts.get(key, 0)
    metrics["mean_norm"] = kept_acc.mean_norm()
    warning = disagreement(metrics)
    metrics["warnings"] = [warning] if warning else []
    return SAEEval(metrics, kept_acc.fired / max(kept_acc.n, 1))


def _three_runs(sae, model, hook, batch, ex: Exclusion):
    """Clean, SAE-spliced and zero-ablated logits, plus the hook activations, features and
    reconstruction [n, pos, ...] and the exclusion masks; excluded positions stay clean."""
    def encode(x):
        feats = sae.encode(x.to(sae.dtype))
        return feats, sae.decode(feats).to(x.dtype)

    def keep_clean(x, masks, replacement):
        return torch.where(masks["kept"][..., None], replacement, x)

    m = RESID.match(hook)
    if m:  # run the shared prefix once, then three continuations from the hook
        start = int(m.group(1)) + (1 if m.group(2) == "post" else 0)
        x = model(batch, stop_at_layer=start) if start > 0 else _embedded(model, batch, hook)
        feats, recon = encode(x)
        masks = ex.masks(batch, x)
        run = lambda resid: model(resid, start_at_layer=start) if start < model.cfg.n_layers \
            else model.unembed_residual(resid)
        return (run(x), run(keep_clean(x, masks, recon)), run(keep_clean(x, masks, torch.zeros_like(recon))),
                x, feats, recon, masks)
    store = {}

    def splice(act, hook):  # noqa: ARG001 (TransformerLens hook signature)
        store["x"] = act
        store["feats"], store["recon"] = encode(act)
        store["masks"] = ex.masks(batch, act)
        return keep_clean(act, store["masks"], store["recon"])

    def zero(act, hook):  # noqa: ARG001
        return keep_clean(act, ex.masks(batch, act), torch.zeros_like(act))

    clean = model(batch)
    spliced = model.run_with_hooks(batch, fwd_hooks=[(hook, splice)])
    zeroed = model.run_with_hooks(batch, fwd_hooks=[(hook, zero)])
    return clean, spliced, zeroed, store["x"], store["feats"], store["recon"], store["masks"]


def _embedded(model, batch, hook):
    _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=1)
    return cache[hook]


class _Totals:
    """Running reconstruction sums over batches, so memory does not grow with the token count."""

    def __init__(self, d_sae: int):
        self.fired = torch.zeros(d_sae, dtype=torch.float64)
        self.n = 0
        self.l0 = self.sq_err = self.sq_norm = self.norm = 0.0
        self.sum_x = None
        self.d = 0

    def add_recon(self, x, feats, recon):
        if x.shape[0] == 0:
            return
        x = x.reshape(-1, x.shape[-1]).double()
        if x.shape[0] != feats.reshape(-1, feats.shape[-1]).shape[0]:
            raise HarnessError("SAE features do not line up with the hook's positions")
        active = feats.reshape(-1, feats.shape[-1]) != 0
        self.fired += active.sum(0).double().cpu()
        self.l0 += float(active.sum())
        self.sq_err += float((recon.reshape(x.shape).double() - x).pow(2).sum())
        self.sq_norm += float(x.pow(2).sum())
        self.norm += float(x.norm(dim=-1).sum())
        s = x.sum(0).cpu()
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.n += x.shape[0]
        self.d = x.shape[-1]

    def mean_norm(self) -> float:
        return self.norm / self.n if self.n else float("nan")

    def metrics(self, hook: str, dense_threshold: float) -> dict:
        n = max(self.n, 1)
        # Variance about the mean over all evaluated tokens (SAELens's ExplainedVarianceCalculator).
        total_var = self.sq_norm - float(self.sum_x.pow(2).sum()) / n if self.sum_x is not None else 0.0
        density = self.fired / n
        mse = self.sq_err / n
        return {
            "hook": hook, "n_tokens": self.n,
            "l0": self.l0 / n,
            "explained_variance": 1 - self.sq_err / total_var if total_var > 0 else float("nan"),
            "mse": mse, "mse_per_dim": mse / max(self.d, 1), "mean_norm": self.mean_norm(),
            "dead_fraction": float((density == 0).double().mean()),
            "dense_fraction": float((density > dense_threshold).double().mean()),
            "dense_threshold": dense_threshold,
        }


class _Logits:
    """Running next-token CE (clean, spliced, zeroed) and KL sums, over every predicted position."""

    def __init__(self):
        self.ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
        self.kl = self.kl_zero = 0.0
        self.n_pred = 0

    def add(self, tokens, clean, spliced, zeroed, model):
        for key, logits in (("clean", clean), ("spliced", spliced), ("zero", zeroed)):
            self.ce[key] += float(model.loss(logits.float(), tokens, per_token=True).sum())
        lp_clean = clean[:, :-1].float().log_softmax(-1)
        p_clean = lp_clean.exp()
        self.kl += float((p_clean * (lp_clean - spliced[:, :-1].float().log_softmax(-1))).sum())
        self.kl_zero += float((p_clean * (lp_clean - zeroed[:, :-1].float().log_softmax(-1))).sum())
        self.n_pred += tokens.shape[0] * (tokens.shape[1] - 1)

    def metrics(self) -> dict:
        n = max(self.n_pred, 1)
        ce = {k: v / n for k, v in self.ce.items()}
        gap = ce["zero"] - ce["clean"]
        kl, kl_zero = self.kl / n, self.kl_zero / n
        recovered = (ce["zero"] - ce["spliced"]) / gap if gap != 0 else float("nan")
        return {"ce_clean": ce["clean"], "ce_spliced": ce["spliced"], "ce_zero_ablated": ce["zero"],
                "ce_loss_recovered": recovered, "ce_loss_score": recovered,
                "kl_div": kl, "kl_div_with_ablation": kl_zero,
                "kl_div_score": (kl_zero - kl) / kl_zero if kl_zero > 0 else float("nan")}
