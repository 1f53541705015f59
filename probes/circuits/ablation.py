"""Ablations: replace a component's output and see what the model loses.

    ablate(model, tokens, metric, heads=[(9, 6)], method="mean", reference=other_tokens)
    ablation_sweep(model, tokens, metric, method="zero")      # every head in turn -> [n_layers, n_heads]

Methods:
- "zero": the output is set to zero;
- "mean": the output is set to its mean over the reference prompts (all their positions when the
  lengths differ, position by position when they match);
- "resample": each prompt gets the output the component had on a randomly drawn reference prompt
  (the reference must have the same token length).
Components are heads (their hook_z, so the output projection sees the replaced value) and MLPs
(hook_mlp_out). A layer whose mixer has no heads has a NaN row in a head sweep, and naming one
of its heads is an error.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError, ShapeError
from probes.circuits.core import Metric, as_tokens, check_head, final_logits, scalar, warn_headless
from probes.circuits.patching import Patch, run_patches

METHODS = ("zero", "mean", "resample")


def _replacement(method: str, act_ref: torch.Tensor | None, batch: int, pos: int, seed: int):
    """A function act [batch, pos, ...] -> replacement values of the same shape."""
    if method == "zero":
        return torch.zeros_like
    if act_ref is None:
        raise ConfigError(f"{method} ablation needs reference prompts (reference=...)")
    if method == "mean":
        mean = act_ref.mean(0) if act_ref.shape[1] == pos else act_ref.mean((0, 1))[None].expand(pos, *act_ref.shape[2:])
        return lambda act: mean.expand_as(act).to(act.dtype)
    if act_ref.shape[1] != pos:
        raise ShapeError(f"resample ablation needs reference prompts of the same token length ({pos}); "
                         f"got {act_ref.shape[1]}")
    draw = torch.randint(0, act_ref.shape[0], (batch,), generator=torch.Generator().manual_seed(seed))
    return lambda act: act_ref[draw].to(act.dtype)


def _check(method: str):
    if method not in METHODS:
        raise ConfigError(f"unknown ablation method {method!r}; use one of {', '.join(METHODS)}")


def _reference_cache(model, reference, names):
    if reference is None:
        return None
    ref = as_tokens(model, reference, "reference prompts")
    with torch.no_grad():
        return model.run_with_cache(ref, names_filter=names)[1]


def _head_setter(replace, head: int):
    def apply(act):
        act[:, :, head] = replace(act)[:, :, head]
        return act

    return apply


def _whole_setter(replace):
    def apply(act):
        act[:] = replace(act)
        return act

    return apply


def ablation_hooks(model, tokens, heads=(), mlps=(), method: str = "zero", reference=None, seed: int = 0):
    """Forward hooks that ablate the given heads [(layer, head)] and MLP layers; use with
    model.hooks(...) or run_with_hooks."""
    _check(method)
    tokens = as_tokens(model, tokens)
    b, p = tokens.shape
    heads = [check_head(model, l, h) for l, h in heads]
    names = sorted({f"blocks.{l}.attn.hook_z" for l, _ in heads} | {f"blocks.{l}.hook_mlp_out" for l in mlps})
    cache = _reference_cache(model, reference, names) if method != "zero" else None
    hooks = []
    for l, h in heads:
        name = f"blocks.{l}.attn.hook_z"
        replace = _replacement(method, None if cache is None else cache[name], b, p, seed)
        setter = _head_setter(replace, h)
        hooks.append((name, lambda act, hook, s=setter: s(act)))
    for l in mlps:
        name = f"blocks.{l}.hook_mlp_out"
        replace = _replacement(method, None if cache is None else cache[name], b, p, seed)
        setter = _whole_setter(replace)
        hooks.append((name, lambda act, hook, s=setter: s(act)))
    return hooks


@torch.no_grad()
def ablate(model, tokens, metric: Metric, heads=(), mlps=(), method: str = "zero", reference=None,
           seed: int = 0) -> float:
    """The metric with the given heads [(layer, head)] and MLP layers ablated together."""
    tokens = as_tokens(model, tokens)
    with model.hooks(fwd_hooks=ablation_hooks(model, tokens, heads, mlps, method, reference, seed)):
        resid = model(tokens, stop_at_layer=model.cfg.n_layers)
        return scalar(metric, final_logits(model, resid, metric)).item()


def ablation_sweep(model, tokens, metric: Metric, method: str = "zero", reference=None, component: str = "heads",
                   seed: int = 0, batch_size: int | None = None) -> torch.Tensor:
    """The metric with each head ablated on its own -> [n_layers, n_heads] (component="heads"),
    or each MLP layer -> [n_layers] (component="mlps"). Runs are batched like patching."""
    _check(method)
    tokens = as_tokens(model, tokens)
    b, p = tokens.shape
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if component not in ("heads", "mlps"):
        raise ConfigError(f"unknown component {component!r}; use heads or mlps")
    hook = "attn.hook_z" if component == "heads" else "hook_mlp_out"
    layers = warn_headless(model, "ablation_sweep") if component == "heads" else list(range(n_layers))
    names = {l: f"blocks.{l}.{hook}" for l in layers}
    cache = _reference_cache(model, reference, list(names.values())) if method != "zero" else None
    patches = []
    for l, name in names.items():
        replace = _replacement(method, None if cache is None else cache[name], b, p, seed)
        if component == "heads":
            patches += [Patch(l, name, _head_setter(replace, h)) for h in range(n_heads)]
        else:
            patches.append(Patch(l, name, _whole_setter(replace)))
    values = run_patches(model, tokens, patches, metric, batch_size)
    if component == "mlps":
        return values
    out = torch.full((n_layers, n_heads), float("nan"))
    out[layers] = values.view(len(layers), n_heads)
    return out
