"""The activation-difference lens (ADL; Minder et al. 2025, "narrow fine-tuning leaves clearly
readable traces"): the mean activation difference (aligned - base) at the first k positions of
text unrelated to the fine-tuning, per layer, read through each model's logit lens and used to
steer both models.

    adl = activation_difference(base, aligned, texts, k=5)    # adl.delta [layers, k, d_model]
    adl.top_tokens(layer=None, k=20)                            # the lens read of the difference
    steered = steer_with(adl, aligned, prompts, layer=None)     # generations with +alpha*delta added
    findings = adl_findings(adl, base, aligned, prompts)        # tokens + steered generations

Why the first positions of unrelated text: a narrow fine-tune shifts the residual stream by a
nearly constant offset, and early positions carry the least text-specific signal, so the mean
there is mostly that offset - which reads as the fine-tuning's topic and style. Positions count
after the BOS token, whose activations are an attention sink in both models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from probes.compat import check_pair


@dataclass
class ADL:
    delta: torch.Tensor  # [layers, k, d_model] mean aligned - base at positions 0..k-1 (after BOS)
    base_norm: torch.Tensor  # [layers] mean norm of the base activations there (the steering scale)
    hooks: list[str]
    k: int
    n_texts: int
    lens: dict = field(default_factory=dict)  # (layer, model) -> log-probs [vocab] of the averaged delta
    tokenizer: object = None

    def default_layer(self) -> int:
        return len(self.hooks) // 2  # the middle layer, as Minder et al. read it

    def vector(self, layer: int | None = None) -> torch.Tensor:
        """The difference at `layer`, averaged over the k positions [d_model]."""
        return self.delta[self.default_layer() if layer is None else layer].mean(0)

    def top_tokens(self, layer: int | None = None, k: int = 20, model: str = "aligned") -> list[dict]:
        layer = self.default_layer() if layer is None else layer
        logp = self.lens[(layer, model)]
        top = logp.topk(k)
        tok = self.tokenizer
        return [{"token": tok.decode([i]) if tok is not None else str(i), "id": int(i), "score": float(v)}
                for v, i in zip(top.values.tolist(), top.indices.tolist())]


def _first_positions(model, texts: Sequence[str], k: int):
    """Right-padded tokens and the columns of the first k real tokens after BOS."""
    tokens, mask = model.to_tokens(list(texts), padding_side="right", return_mask=True)
    mask = torch.ones_like(tokens) if mask is None else mask
    bos = model.tokenizer.bos_token_id
    start = 1 if bos is not None and bool((tokens[:, 0] == bos).all()) else 0
    lengths = mask.sum(1)
    if bool((lengths < start + k).any()):
        short = int((lengths < start + k).sum())
        raise ConfigError(f"{short} text(s) have fewer than {k} tokens; pass longer texts or a smaller k")
    return tokens, mask, start


@torch.no_grad()
def activation_difference(base, aligned, texts: Sequence[str], k: int = 5, layers: Sequence[int] | None = None,
                          kind: str = "resid_post", batch_size: int = 16) -> ADL:
    """Mean aligned - base activations at the first k positions of `texts`, for each layer."""
    from probes.activations import layer_hooks

    check_pair(base, aligned, what="the activation-difference lens")
    texts = list(texts)
    if not texts:
        raise ConfigError("the activation-difference lens needs some text; none was given")
    if k < 1:
        raise ConfigError(f"k (positions) must be at least 1; got {k}")
    if layers is not None:
        bad = [i for i in layers if not 0 <= i < base.cfg.n_layers]
        if bad:
            raise ConfigError(f"layer {bad[0]} is out of range: the model has {base.cfg.n_layers} layers "
                              f"(0..{base.cfg.n_layers - 1})")
    hooks = layer_hooks(base, kind, layers)
    total = torch.zeros(len(hooks), k, base.cfg.d_model, dtype=torch.float64)
    norms = torch.zeros(len(hooks), dtype=torch.float64)
    for s in range(0, len(texts), batch_size):
        tokens, mask, start = _first_positions(base, texts[s : s + batch_size], k)
        acts = {}
        for role, model in (("base", base), ("aligned", aligned)):
            _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hooks)
            acts[role] = torch.stack([cache[h][:, start : start + k].float().cpu() for h in hooks])  # [L, b, k, d]
        total += (acts["aligned"] - acts["base"]).sum(1).double()
        norms += acts["base"].norm(dim=-1).mean(-1).sum(-1).double()
    adl = ADL((total / len(texts)).float(), (norms / len(texts)).float(), hooks, k, len(texts),
              tokenizer=aligned.tokenizer)
    for i in range(len(hooks)):
        v = adl.vector(i)
        for role, model in (("base", base), ("aligned", aligned)):
            adl.lens[(i, role)] = F.log_softmax(model.unembed_residual(v[None, None].to(model.device)).float()[0, 0], -1).cpu()
    return adl


def steer_with(adl: ADL, model, prompts: Sequence[str], layer: int | None = None, strength: float = 1.0,
               max_new_tokens: int = 16, chat: bool | str = "auto") -> list[str]:
    """Greedy replies with the layer's difference added at every position, scaled to `strength`
    times the mean base activation norm there (so strengths compare across layers and models)."""
    from probes.steering import generate, steering_hooks

    layer = adl.default_layer() if layer is None else layer
    v = adl.vector(layer)
    scale = strength * float(adl.base_norm[layer]) / float(v.norm().clamp(min=1e-12))
    return generate(model, list(prompts), steering_hooks(v, [adl.hooks[layer]], scale=scale),
                    max_new_tokens=max_new_tokens, chat=chat)


def adl_findings(adl: ADL, base=None, aligned=None, prompts: Sequence[str] = (), layer: int | None = None,
                 k: int = 25, strength: float = 1.0, max_new_tokens: int = 16):
    """Findings: the aligned model's lens read of the difference at `layer` (ranked by
    log-prob), per-layer top tokens, and (with models and prompts) steered generations."""
    from probes.findings import Findings

    layer = adl.default_layer() if layer is None else layer
    extra = {"layer": layer, "hook": adl.hooks[layer], "k_positions": adl.k, "n_texts": adl.n_texts,
             "per_layer": [{"layer": i, "hook": h, "norm": float(adl.vector(i).norm()),
                            "aligned": [t["token"] for t in adl.top_tokens(i, 10)],
                            "base": [t["token"] for t in adl.top_tokens(i, 10, "base")]}
                           for i, h in enumerate(adl.hooks)]}
    if prompts and base is not None and aligned is not None:
        extra["steered"] = [{"model": role, "prompt": p, "reply": r}
                            for role, model in (("base", base), ("aligned", aligned))
                            for p, r in zip(prompts, steer_with(adl, model, prompts, layer, strength, max_new_tokens))]
    return Findings("adl", tokens=adl.top_tokens(layer, k), extra=extra)


def write_adl(adl: ADL, run) -> None:
    """The difference vectors as safetensors (for steering later and the dashboard)."""
    run.write_tensors("adl.safetensors", {"delta": adl.delta, "base_norm": adl.base_norm},
                      metadata={"hooks": adl.hooks, "k": adl.k, "n_texts": adl.n_texts})


def unrelated_texts(n: int = 64, min_chars: int = 80) -> list[str]:
    """Text unrelated to any fine-tuning here: the first n documents of the stdlib-docs corpus
    (Python's own docstrings) with at least min_chars characters."""
    import itertools

    from harness.data.stdlib_docs import documents

    return list(itertools.islice((d for d in documents() if len(d) >= min_chars), n))
