"""Feature analysis for the dashboard: for chosen SAE features, the top-activating contexts with
per-token activations, an activation histogram, the firing density, and the logit effects
(the decoder direction through the unembedding: the tokens it promotes and suppresses).

    report = analyze_features(sae, model, corpus="stdlib-docs", n_tokens=20_000, features=10)
    report.features[0]["top_contexts"][0]  # {"tokens": [...], "acts": [...], "max": ..., "context": i}
    report.write(run)                      # features.json + feature_density.safetensors

`features` is a list of indices, or an int n meaning the n most frequently firing features.
Memory is bounded: per feature only its best `top_k` contexts are kept while streaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.devices import device_of
from harness.errors import HarnessError
from harness.progress import progress
from probes.sae.evaluate import heldout_tokens
from probes.sae.io import check_fits, hook_width  # noqa: F401  (hook_width re-exported for callers)


@dataclass
class FeatureReport:
    hook: str
    n_tokens: int
    density: torch.Tensor  # [d_sae] firing frequency of every feature
    mean_act: torch.Tensor  # [d_sae] mean activation over all tokens
    features: list[dict]  # one dict per analysed feature (see analyze_features)

    def write(self, run, name: str = "features") -> None:
        run.write_json(f"{name}.json", {"hook": self.hook, "n_tokens": self.n_tokens, "features": self.features})
        run.write_tensors(f"{name}_density.safetensors", {"density": self.density, "mean_act": self.mean_act})


def feature_acts(sae, model, hook: str, tokens: torch.Tensor, exclusion=None) -> torch.Tensor:
    """SAE feature activations [n, pos, d_sae] at `hook` for token ids [n, pos]; zero where the SAE
    is not meant to apply: the positions its training left out (leading positions, special tokens,
    norms above its max_activation_norm; probes.sae.outliers), or those of `exclusion` if given."""
    from harness.caching.hooks import stop_layer
    from probes.sae.outliers import Exclusion

    ex = exclusion if exclusion is not None else Exclusion.of_sae(sae)
    with torch.inference_mode():
        tokens = tokens.to(device_of(model))
        _, cache = model.run_with_cache(tokens, names_filter=[hook],
                                        stop_at_layer=stop_layer([hook], model.cfg.n_layers))
        x = cache[hook]
        acts = sae.encode(x.to(sae.dtype)).float()
        acts = acts.masked_fill(~ex.masks(tokens, x)["kept"][..., None], 0).cpu()
    return acts.clone()  # an ordinary tensor: callers may edit it


def firing_stats(chunks, d_sae: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(firing frequency, mean activation) [d_sae] of every feature over chunks of feature
    activations [..., d_sae], accumulated in float64 so long streams do not lose precision."""
    fired = torch.zeros(d_sae, dtype=torch.float64)
    total = torch.zeros(d_sae, dtype=torch.float64)
    n = 0
    for acts in chunks:
        acts = acts.reshape(-1, d_sae)
        fired += (acts != 0).sum(0).double().cpu()
        total += acts.sum(0).double().cpu()
        n += acts.shape[0]
    if not n:
        raise HarnessError("no activations to compute feature statistics over")
    return (fired / n).float(), (total / n).float()


@torch.no_grad()
def logit_effects(sae, model, feature: int, top_n: int = 10) -> dict:
    """Tokens whose logits the feature's decoder direction raises / lowers most through W_U."""
    direction = sae.W_dec[feature].detach().to(model.W_U.dtype)
    effect = (direction @ model.W_U).float()
    up, down = effect.topk(top_n), (-effect).topk(top_n)
    tok = model.tokenizer
    word = (lambda i: tok.decode([i])) if tok is not None else str
    return {"promoted": [[word(int(i)), float(v)] for v, i in zip(up.values, up.indices)],
            "suppressed": [[word(int(i)), float(-v)] for v, i in zip(down.values, down.indices)]}


def analyze_features(sae, model, hook: str | None = None, *, tokens=None, corpus="stdlib-docs",
                     n_tokens: int = 20_000, context_length: int = 128, features=10, top_k: int = 8,
                     bins: int = 30, batch_size: int = 8, logit_top_n: int = 10,
                     show_progress: bool | None = None) -> FeatureReport:
    hook = check_fits(sae, model, hook)
    if tokens is None:
        tokens = heldout_tokens(model, corpus, n_tokens, context_length, split="all")
    d_sae = sae.cfg.d_sae
    fired = torch.zeros(d_sae, dtype=torch.float64)
    total = torch.zeros(d_sae, dtype=torch.float64)
    # Per context, each feature's max activation: kept for all contexts ([n, d_sae] floats is small).
    ctx_max = torch.empty(len(tokens), d_sae)
    hist = torch.zeros(d_sae * bins, dtype=torch.long)
    for i in progress(range(0, len(tokens), batch_size), desc="scanning features", unit="batch", show=show_progress):
        acts = feature_acts(sae, model, hook, tokens[i:i + batch_size])
        fired += (acts != 0).sum((0, 1)).double()
        total += acts.sum((0, 1)).double()
        ctx_max[i:i + len(acts)] = acts.amax(1)
        _add_to_histogram(hist, acts, bins)
    n = tokens.numel()
    density, mean_act = (fired / n).float(), (total / n).float()
    chosen = _choose(features, density)
    hist = hist.view(d_sae, bins)
    rows = [_feature_row(sae, model, hook, tokens, ctx_max, hist[f], f, density, mean_act, top_k, logit_top_n)
            for f in progress(chosen, desc="top contexts", unit="feature", show=show_progress)]
    return FeatureReport(hook, n, density, mean_act, rows)


def _choose(features, density: torch.Tensor) -> list[int]:
    if isinstance(features, int):
        return density.argsort(descending=True)[:features].tolist()
    from harness.errors import ConfigError

    chosen = [int(f) for f in features]
    bad = [f for f in chosen if not 0 <= f < len(density)]
    if bad:
        raise ConfigError(f"feature indices {bad} are out of range; the SAE has {len(density)} features")
    return chosen


def _feature_row(sae, model, hook, tokens, ctx_max, hist, f, density, mean_act, top_k, logit_top_n) -> dict:
    best = ctx_max[:, f].topk(min(top_k, len(tokens)))
    keep = [int(c) for c, v in zip(best.indices, best.values) if v > 0]
    contexts = []
    if keep:
        acts = feature_acts(sae, model, hook, tokens[keep])[..., f]  # recompute only the winners
        for c, row in zip(keep, acts):
            ids = tokens[c].tolist()
            words = [model.tokenizer.decode([t]) for t in ids] if model.tokenizer is not None else ids
            contexts.append({"context": c, "max": float(row.max()), "tokens": words, "acts": row.tolist()})
    return {"feature": f, "density": float(density[f]), "mean_act": float(mean_act[f]),
            "top_contexts": contexts, "histogram": {"log10_edges": _edges(len(hist)), "counts": hist.tolist()},
            "logits": logit_effects(sae, model, f, logit_top_n)}


# Activation scales differ between features and are unknown before the pass, so every feature
# shares fixed log-spaced bins: one streaming pass, [d_sae, bins] integers of memory.
LOG10_RANGE = (-3.0, 3.0)


def _edges(bins: int) -> list[float]:
    return torch.linspace(*LOG10_RANGE, bins + 1).tolist()


def _add_to_histogram(hist: torch.Tensor, acts: torch.Tensor, bins: int) -> None:
    flat = acts.reshape(-1, acts.shape[-1])
    rows, feats = flat.nonzero(as_tuple=True)
    values = flat[rows, feats].abs().clamp_min(1e-30).log10()
    lo, hi = LOG10_RANGE
    b = ((values - lo) / (hi - lo) * bins).long().clamp(0, bins - 1)
    hist.index_add_(0, feats * bins + b, torch.ones_like(b))
