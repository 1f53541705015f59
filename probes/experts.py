"""Expert utilisation: how often each expert of each mixture-of-experts layer is chosen, and how
evenly the load spreads, over a batch or a whole corpus.

    usage = expert_usage(model, ["some text", "more text"])   # or token ids, or an iterable of either
    usage.counts        # [moe layers, experts] how many tokens chose each expert
    usage.entropy()     # [moe layers] load-balance entropy, 1.0 = perfectly even
    usage_figure(usage) # plotly heatmap, layers x experts

Counts accumulate through hooks on the router's choice, so nothing is cached and only the layers
up to the last MoE layer asked for are run. Padding tokens are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from harness.errors import ConfigError


@dataclass
class ExpertUsage:
    layers: list[int]  # the MoE layers counted, in order (rows of the tensors below)
    counts: torch.Tensor  # [layers, experts] int64: tokens that chose each expert
    weight: torch.Tensor  # [layers, experts] float64: routing weight each expert received in total
    n_tokens: int  # real (unpadded) tokens seen
    experts_per_token: int

    def fractions(self) -> torch.Tensor:
        """[layers, experts]: each expert's share of the layer's routing decisions (rows sum to 1)."""
        return self.counts.double() / self.counts.sum(-1, keepdim=True).clamp(min=1)

    def entropy(self, normalized: bool = True) -> torch.Tensor:
        """[layers] entropy of each layer's expert shares (nats); divided by log(n_experts) when
        normalized, so 1.0 means a perfectly even load and 0.0 one expert taking everything."""
        f = self.fractions()
        h = -(f * f.clamp(min=1e-300).log()).sum(-1)
        return h / math.log(f.shape[-1]) if normalized and f.shape[-1] > 1 else h

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-ready)."""
        return {
            "layers": list(self.layers),
            "n_tokens": self.n_tokens,
            "experts_per_token": self.experts_per_token,
            "counts": self.counts.tolist(),
            "weight": self.weight.tolist(),
            "fractions": self.fractions().tolist(),
            "entropy": self.entropy().tolist(),
        }


def moe_layers(model) -> list[int]:
    return [i for i in range(model.cfg.n_layers) if model.cfg.is_moe_layer(i)]


@torch.no_grad()
def expert_usage(
    model,
    data: Any,
    attention_mask: torch.Tensor | None = None,
    layers: list[int] | None = None,
    batch_size: int = 8,
) -> ExpertUsage:
    """Count routing decisions. `data`: token ids [batch, pos], a string or list of strings, or an
    iterable of those (a corpus, run one item at a time). `attention_mask` goes with a token tensor."""
    available = moe_layers(model)
    if not available:
        raise ConfigError(f"{model.cfg.family} model has no mixture-of-experts layers to count")
    layers = sorted(available if layers is None else layers)
    bad = sorted(set(layers) - set(available))
    if bad:
        raise ConfigError(f"layers {bad} are not MoE layers; MoE layers: {available}")
    n_experts = model.cfg.n_experts
    counts = torch.zeros(len(layers), n_experts, dtype=torch.long)
    weight = torch.zeros(len(layers), n_experts, dtype=torch.float64)
    state: dict[str, Any] = {"mask": None, "indices": {}}

    def keep(x: torch.Tensor) -> torch.Tensor:  # [batch, pos, k] -> [real tokens, k]
        return x.reshape(-1, x.shape[-1]) if state["mask"] is None else x[state["mask"]]

    def on_indices(row):
        def hook(indices, hook):
            chosen = keep(indices).flatten().cpu()
            state["indices"][row] = chosen
            counts[row] += torch.bincount(chosen, minlength=n_experts)
        return hook

    def on_weights(row):
        def hook(weights, hook):
            weight[row].index_add_(0, state["indices"][row], keep(weights).flatten().double().cpu())
        return hook

    fwd = []
    for row, layer in enumerate(layers):
        fwd.append((f"blocks.{layer}.mlp.hook_topk_indices", on_indices(row)))
        fwd.append((f"blocks.{layer}.mlp.hook_topk_weights", on_weights(row)))
    n_tokens = 0
    with model.hooks(fwd_hooks=fwd):
        for tokens, mask in _batches(model, data, attention_mask, batch_size):
            state["mask"] = None if mask is None else mask.bool().to(tokens.device)
            n_tokens += tokens.numel() if mask is None else int(mask.sum())
            model(tokens, attention_mask=mask, stop_at_layer=layers[-1] + 1)
    return ExpertUsage(layers, counts, weight, n_tokens, model.cfg.experts_per_token)


def _batches(model, data, attention_mask, batch_size):
    """(tokens [batch, pos], mask or None) pairs from any accepted kind of input."""
    if isinstance(data, str):
        data = [data]
    if isinstance(data, torch.Tensor):
        data = data if data.dim() == 2 else data[None]
        for start in range(0, data.shape[0], batch_size):
            mask = None if attention_mask is None else attention_mask[start : start + batch_size]
            yield data[start : start + batch_size].to(model.device), mask
    elif isinstance(data, list) and all(isinstance(t, str) for t in data):
        for start in range(0, len(data), batch_size):
            yield model.to_tokens(data[start : start + batch_size], padding_side="right", return_mask=True,
                                  prepend_bos=model.cfg.tokenizer_prepends_bos)
    elif isinstance(data, Iterable):
        for item in data:  # a corpus: each item is a batch in its own right
            yield from _batches(model, item, None, batch_size)
    else:
        raise TypeError(f"expected token ids, text, or an iterable of them; got {type(data).__name__}")


def usage_figure(usage: ExpertUsage, value: str = "fractions"):
    """Plotly heatmap of expert load, one row per MoE layer (labelled with its normalised entropy).
    value: "fractions" (share of routing decisions), "counts" or "weight"."""
    import plotly.graph_objects as go

    z = {"fractions": usage.fractions(), "counts": usage.counts, "weight": usage.weight}[value]
    entropy = usage.entropy().tolist()
    rows = [f"layer {layer} (H={h:.2f})" for layer, h in zip(usage.layers, entropy)]
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=list(range(z.shape[1])), y=rows, colorscale="Viridis",
                               colorbar={"title": value}))
    fig.update_layout(title=f"Expert {value} over {usage.n_tokens} tokens (top-{usage.experts_per_token})",
                      xaxis_title="expert", yaxis_title="MoE layer", yaxis_autorange="reversed")
    return fig
