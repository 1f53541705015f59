"""Attribution patching: the first-order (gradient) estimate of activation patching.

Patching activation a from the clean run into the corrupted run changes the metric by about
(a_clean - a_corrupted) . d metric / d a, the gradient taken on the corrupted run. One forward
and one backward pass estimate every patch of a sweep at once.

    est = attribute_heads(model, clean, corrupted, metric)          # [n_layers, n_heads]
    real = patch_heads_all_pos(model, clean, corrupted, metric)
    correlation(est, real)

The estimates are returned as estimated metric values after patching (the corrupted run's metric
plus the estimated change), so they sit on the same scale as the patching sweeps.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from probes.circuits.core import Metric, check_pair, final_logits, scalar, warn_headless
from probes.circuits.experts import expert_contributions, moe_layers


def gradients(model, tokens: torch.Tensor, names: list[str], metric: Metric):
    """(metric value, {name: activation}, {name: d metric / d activation}) on `tokens`."""
    acts, grads, probes = {}, {}, {}

    def save(act, hook):
        # Adding a zero leaf gives a gradient handle even when the weights are frozen, and keeps
        # the graph intact for earlier hooks.
        probe = torch.zeros_like(act, requires_grad=True)
        acts[hook.name], probes[hook.name] = act.detach(), probe
        return act + probe

    with torch.enable_grad():
        model.check_hook_names(names)
        with model.hooks(fwd_hooks=[(n, save) for n in names]):
            resid = model(tokens, stop_at_layer=model.cfg.n_layers)
            logits = final_logits(model, resid, metric)
        value = scalar(metric, logits)
        found = [probes[n] for n in names]
        for n, g in zip(names, torch.autograd.grad(value, found, allow_unused=True)):
            grads[n] = torch.zeros_like(acts[n]) if g is None else g
    return value.item(), acts, grads


def _clean(model, clean, names):
    with torch.no_grad():
        return model.run_with_cache(clean, names_filter=names)[1]


def attribute_layer_pos(model, clean, corrupted, metric: Metric, hook: str = "resid_pre") -> torch.Tensor:
    """Estimated metric after patching `blocks.{l}.hook_{hook}` at one position -> [n_layers, pos]."""
    if hook not in ("resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post"):
        raise ConfigError(f"cannot attribute {hook!r} by layer and position; "
                          "use resid_pre, resid_mid, attn_out, mlp_out or resid_post")
    clean, corrupted = check_pair(model, clean, corrupted)
    names = [f"blocks.{layer}.hook_{hook}" for layer in range(model.cfg.n_layers)]
    cache = _clean(model, clean, names)
    base, acts, grads = gradients(model, corrupted, names, metric)
    est = torch.stack([((cache[n] - acts[n]) * grads[n]).sum(dim=(0, 2)) for n in names])
    return base + est.float().cpu()


def attribute_heads(model, clean, corrupted, metric: Metric, by_pos: bool = False) -> torch.Tensor:
    """Estimated metric after patching each head's output (hook_z) -> [n_layers, n_heads], or
    [n_layers, pos, n_heads] with by_pos (NaN on layers whose mixer has no heads)."""
    clean, corrupted = check_pair(model, clean, corrupted)
    layers = warn_headless(model, "attribute_heads")
    names = [f"blocks.{layer}.attn.hook_z" for layer in layers]
    cache = _clean(model, clean, names)
    base, acts, grads = gradients(model, corrupted, names, metric)
    # [batch, pos, head, d_head] -> sum over batch and d_head (and positions unless by_pos)
    dims = (0, 3) if by_pos else (0, 1, 3)
    est = torch.stack([((cache[n] - acts[n]) * grads[n]).sum(dim=dims) for n in names])
    out = torch.full((model.cfg.n_layers, *est.shape[1:]), float("nan"))
    out[layers] = base + est.float().cpu()
    return out


def attribute_experts(model, clean, corrupted, metric: Metric) -> torch.Tensor:
    """Estimated metric after patching each routed expert's contribution -> [n_layers, n_experts]
    (NaN on dense layers)."""
    clean, corrupted = check_pair(model, clean, corrupted)
    layers = moe_layers(model)
    names = [f"blocks.{layer}.hook_mlp_out" for layer in layers]
    clean_parts = expert_contributions(model, clean, layers)
    corrupt_parts = expert_contributions(model, corrupted, layers)
    base, _, grads = gradients(model, corrupted, names, metric)
    out = torch.full((model.cfg.n_layers, model.cfg.n_experts), float("nan"))
    for layer, name in zip(layers, names):
        delta = clean_parts[layer] - corrupt_parts[layer]  # [experts, batch, pos, d_model]
        out[layer] = base + (delta * grads[name].float()[None]).sum(dim=(1, 2, 3)).cpu()
    return out


ATTRIBUTIONS = {
    "resid_pre": lambda m, c, x, f: attribute_layer_pos(m, c, x, f, "resid_pre"),
    "attn_out": lambda m, c, x, f: attribute_layer_pos(m, c, x, f, "attn_out"),
    "mlp_out": lambda m, c, x, f: attribute_layer_pos(m, c, x, f, "mlp_out"),
    "heads": attribute_heads,
    "heads_by_pos": lambda m, c, x, f: attribute_heads(m, c, x, f, by_pos=True),
    "experts": attribute_experts,
}
