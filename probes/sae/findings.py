"""An SAE-feature diff as findings: one SAE read over both models' activations on the same texts,
its features ranked by how much more often they fire in the aligned model, each with the texts
where its activation rose most (the aligned model's maximum over the text minus the base
model's), and the top features' decoder directions read through the aligned model's unembedding
as tokens (the logit lens of what those features write).

Contexts follow the rise, not the aligned model's activation alone: a feature that alignment
turned up on the topic may fire as strongly in both models on some unrelated text, and that
text says nothing about what changed.

    f = sae_findings(sae, base, aligned, texts)   # probes.findings.Findings("sae", ...)
    f.latents[0]   # {"id", "score": freq_aligned - freq_base, "freq_base", ..., "contexts": [text, ...],
                   #  "context_max": aligned max per context, "context_rise": its rise over the base model's}
    f.tokens[0]    # {"token", "id", "score": log-prob under the lens of the weighted decoder sum}

Texts are read whole (up to `context_length` tokens each, right-padded so a text's positions see
only its own tokens); `shown` gives what each text is called in the contexts (the prompt before
its chat template, say), so the scorer's "latents on topic" criterion reads plain prompts.
"""

from __future__ import annotations

from typing import Sequence

import torch

from probes.sae.diff import FeatureDiff
from probes.sae.features import feature_acts, firing_stats
from probes.sae.io import SAEError, check_fits

RESIDUAL_SPACE = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
RANKS = ("freq_delta", "mean_delta")


def _encode(model, texts: list[str], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, mask = model.to_tokens(texts, padding_side="right", return_mask=True)
    mask = torch.ones_like(tokens) if mask is None else mask
    return tokens[:, :context_length], mask[:, :context_length].bool()


def _pass(sae, model, hook: str, tokens: torch.Tensor, mask: torch.Tensor, batch_size: int):
    """(firing frequency, mean activation) over the real positions, and each text's max [n, d_sae]."""
    maxima = []

    def chunks():
        for i in range(0, len(tokens), batch_size):
            acts = feature_acts(sae, model, hook, tokens[i : i + batch_size])
            acts = acts * mask[i : i + batch_size, :, None]  # padding positions are no text's
            maxima.append(acts.amax(1))
            yield acts[mask[i : i + batch_size]]

    freq, mean = firing_stats(chunks(), sae.cfg.d_sae)
    return freq, mean, torch.cat(maxima)


@torch.no_grad()
def feature_diff_on_texts(sae, base, aligned, texts: Sequence[str], hook: str | None = None, context_length: int = 64,
                          batch_size: int = 8) -> tuple[FeatureDiff, torch.Tensor, torch.Tensor]:
    """probes.sae.diff's FeatureDiff over these texts, and each model's (aligned, base) maximum
    activation of every feature in every text [texts, d_sae]."""
    from probes.compat import check_pair

    hook = check_fits(sae, base, hook)
    check_fits(sae, aligned, hook)
    check_pair(base, aligned, what="an SAE-feature diff")
    texts = list(texts)
    if not texts:
        raise SAEError("an SAE-feature diff needs some text; none was given")
    tokens, mask = _encode(base, texts, context_length)
    freq_b, mean_b, max_b = _pass(sae, base, hook, tokens, mask, batch_size)
    freq_a, mean_a, max_a = _pass(sae, aligned, hook, tokens, mask, batch_size)
    stats = {"feature": torch.arange(sae.cfg.d_sae), "freq_base": freq_b, "freq_aligned": freq_a,
             "freq_delta": freq_a - freq_b, "mean_base": mean_b, "mean_aligned": mean_a, "mean_delta": mean_a - mean_b}
    return FeatureDiff(hook, int(mask.sum()), stats), max_a, max_b


@torch.no_grad()
def in_residual_space(sae, model, hook: str) -> bool:
    """Whether the SAE's decoder writes vectors of the residual stream (so the unembedding can read them)."""
    return hook.rsplit(".", 1)[-1] in RESIDUAL_SPACE and sae.cfg.d_in == model.cfg.d_model


def lens_tokens(sae, model, hook: str, features: Sequence[int], weights: Sequence[float], k: int = 25) -> list[dict]:
    """The weighted sum of the features' decoder directions read through the model's final norm
    and unembedding (as the logit lens reads a residual stream); [] off the residual stream."""
    if not features or not in_residual_space(sae, model, hook):
        return []
    w = torch.tensor([max(float(x), 0.0) for x in weights])
    if float(w.sum()) == 0:
        return []
    direction = (w[:, None] * sae.W_dec.detach()[list(features)].float().cpu()).sum(0)
    logits = model.unembed_residual(direction[None, None].to(model.device, model.W_U.dtype)).float()[0, 0]
    top = torch.log_softmax(logits, -1).topk(min(k, logits.shape[-1]))
    tok = model.tokenizer
    return [{"token": tok.decode([i]) if tok is not None else str(i), "id": int(i), "score": float(v)}
            for v, i in zip(top.values.tolist(), top.indices.tolist())]


def sae_findings(sae, base, aligned, texts: Sequence[str], hook: str | None = None, *, shown: Sequence[str] | None = None,
                 by: str = "freq_delta", top: int = 25, n_contexts: int = 5, token_k: int = 25,
                 context_length: int = 64, batch_size: int = 8):
    """Findings("sae"): the `top` features whose `by` (freq_delta or mean_delta, aligned - base)
    rose most, each with the `n_contexts` texts where its activation rose most, and the lens
    tokens of their decoder directions weighted by each one's rise in mean activation."""
    from probes.findings import Findings

    if by not in RANKS:
        raise SAEError(f"cannot rank SAE features by {by!r}; use one of {', '.join(RANKS)}")
    texts = list(texts)
    shown = list(shown) if shown is not None else texts
    if len(shown) != len(texts):
        raise SAEError(f"{len(shown)} names for {len(texts)} texts; give one per text")
    diff, max_a, max_b = feature_diff_on_texts(sae, base, aligned, texts, hook, context_length, batch_size)
    rise = max_a - max_b
    rows = [r for r in diff.rows(by) if r[by] > 0]
    rows.sort(key=lambda r: -r[by])  # rows() orders by |change|: here the rises come first
    latents = []
    for r in rows[:top]:
        f = r["feature"]
        best = rise[:, f].topk(min(n_contexts, len(texts)))
        keep = [(i, v) for i, v in zip(best.indices.tolist(), best.values.tolist()) if v > 0]
        latents.append({"id": f, "score": r[by], **{c: r[c] for c in ("freq_base", "freq_aligned", "mean_base",
                                                                        "mean_aligned")},
                        "contexts": [shown[i] for i, _ in keep], "context_max": [float(max_a[i, f]) for i, _ in keep],
                        "context_rise": [v for _, v in keep]})
    tokens = lens_tokens(sae, aligned, diff.hook, [x["id"] for x in latents],
                         [x["mean_aligned"] - x["mean_base"] for x in latents], token_k)
    fallen = sorted((r for r in diff.rows(by) if r[by] < 0), key=lambda r: r[by])[:10]
    extra = {"hook": diff.hook, "ranked_by": by, "n_tokens": diff.n_tokens, "n_texts": len(texts),
             "n_risen": len(rows), "d_sae": sae.cfg.d_sae,
             "fallen": [{"id": r["feature"], "score": r[by]} for r in fallen],
             "tokens_from": _tokens_from(sae, aligned, diff.hook, tokens)}
    return Findings("sae", tokens=tokens, latents=latents, extra=extra)


def _tokens_from(sae, model, hook: str, tokens: list) -> str:
    if tokens:
        return "the lens of the listed features' decoder directions, weighted by their rise in mean activation"
    if not in_residual_space(sae, model, hook):
        return f"none: {hook} is not a residual-stream hook, so the unembedding cannot read its decoder"
    return "none: no listed feature rose in mean activation"
