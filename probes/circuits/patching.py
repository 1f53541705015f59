"""Activation patching: run the corrupted prompts, copy one activation in from the clean run,
and measure how much of the clean behaviour comes back.

    clean, corrupted = ...                     # token ids [batch, pos], same shape
    metric = logit_diff(answers)               # logits -> scalar
    heads = patch_heads_all_pos(model, clean, corrupted, metric)   # [n_layers, n_heads]

Each sweep returns the metric for every patch, shaped as TransformerLens's `get_act_patch_*`
functions shape theirs (and equal to them on the same weights). Two things make it fast:
- the corrupted run up to the patched layer is the same for every patch there, so it is computed
  once and each patched run starts at that layer (`start_at_layer`);
- several patched runs go through the model as one batch (`batch_size` patches per forward).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import torch

from harness.errors import ConfigError
from harness.progress import progress
from probes.circuits.core import Metric, check_pair, final_logits, scalar, warn_headless
from probes.circuits.experts import expert_contributions, moe_layers


@dataclass
class Patch:
    """One patched run: at hook `hook` (inside block `layer`) replace the activation of the
    corrupted run with `apply(act)`, where act is this run's [batch, ...] slice."""

    layer: int
    hook: str
    apply: Callable[[torch.Tensor], torch.Tensor]


def default_batch_size(n_prompts: int, rows: int = 32) -> int:
    """Patched runs per forward: about `rows` sequences in a batch."""
    return max(1, rows // max(1, n_prompts))


@torch.no_grad()
def run_patches(model, corrupted: torch.Tensor, patches: list[Patch], metric: Metric,
                batch_size: int | None = None) -> torch.Tensor:
    """The metric after each patch [len(patches)], batching runs that start at the same layer."""
    b = corrupted.shape[0]
    batch_size = batch_size or default_batch_size(b)
    layers = sorted({p.layer for p in patches})
    names = [f"blocks.{layer}.hook_resid_pre" for layer in layers]
    _, cache = model.run_with_cache(corrupted, names_filter=names)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(patches):
        by_layer[p.layer].append(i)
    out = torch.empty(len(patches))
    bar = progress(total=len(patches), desc="patching", unit="patch")
    for layer, idx in by_layer.items():
        start = cache[f"blocks.{layer}.hook_resid_pre"]
        for lo in range(0, len(idx), batch_size):
            chunk = idx[lo : lo + batch_size]
            hooks = _chunk_hooks([patches[i] for i in chunk], b)
            with model.hooks(fwd_hooks=hooks):
                resid = model(start.repeat(len(chunk), 1, 1), start_at_layer=layer, stop_at_layer=model.cfg.n_layers)
                logits = final_logits(model, resid, metric)
            for j, i in enumerate(chunk):
                out[i] = scalar(metric, logits[j * b : (j + 1) * b]).item()
            bar.update(len(chunk))
    bar.close()
    return out


def _chunk_hooks(chunk: list[Patch], b: int):
    """Hooks that apply patch j of the chunk to rows [j*b, (j+1)*b) of the batched run."""
    per_hook: dict[str, list[tuple[int, Callable]]] = defaultdict(list)
    for j, p in enumerate(chunk):
        per_hook[p.hook].append((j, p.apply))

    def make(entries):
        def hook(act, hook):
            for j, apply in entries:
                act[j * b : (j + 1) * b] = apply(act[j * b : (j + 1) * b])
            return act

        return hook

    return [(name, make(entries)) for name, entries in per_hook.items()]


def _clean_cache(model, clean: torch.Tensor, names: list[str]):
    with torch.no_grad():
        return model.run_with_cache(clean, names_filter=names)[1]


def _copy_pos(clean_act: torch.Tensor, pos: int):
    def apply(act):
        act[:, pos] = clean_act[:, pos]
        return act

    return apply


def _copy_head(clean_act: torch.Tensor, head: int, pos: int | None = None):
    def apply(act):
        if pos is None:
            act[:, :, head] = clean_act[:, :, head]
        else:
            act[:, pos, head] = clean_act[:, pos, head]
        return act

    return apply


def patch_layer_pos(model, clean, corrupted, metric: Metric, hook: str = "resid_pre",
                    batch_size: int | None = None) -> torch.Tensor:
    """Patch a block-level activation (`resid_pre`, `resid_mid`, `attn_out`, `mlp_out`,
    `resid_post`) at one layer and position at a time -> [n_layers, pos]."""
    if hook not in ("resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post"):
        raise ConfigError(f"cannot patch {hook!r} by layer and position; "
                          "use resid_pre, resid_mid, attn_out, mlp_out or resid_post")
    clean, corrupted = check_pair(model, clean, corrupted)
    n_layers, n_pos = model.cfg.n_layers, clean.shape[1]
    names = [f"blocks.{layer}.hook_{hook}" for layer in range(n_layers)]
    cache = _clean_cache(model, clean, names)
    patches = [Patch(layer, names[layer], _copy_pos(cache[names[layer]], pos))
               for layer in range(n_layers) for pos in range(n_pos)]
    return run_patches(model, corrupted, patches, metric, batch_size).view(n_layers, n_pos)


def patch_resid_pre(model, clean, corrupted, metric, batch_size=None) -> torch.Tensor:
    """Residual stream entering each block, by layer and position -> [n_layers, pos]."""
    return patch_layer_pos(model, clean, corrupted, metric, "resid_pre", batch_size)


def patch_attn_out(model, clean, corrupted, metric, batch_size=None) -> torch.Tensor:
    """Attention output of each block, by layer and position -> [n_layers, pos]."""
    return patch_layer_pos(model, clean, corrupted, metric, "attn_out", batch_size)


def patch_mlp_out(model, clean, corrupted, metric, batch_size=None) -> torch.Tensor:
    """MLP (or MoE) output of each block, by layer and position -> [n_layers, pos]."""
    return patch_layer_pos(model, clean, corrupted, metric, "mlp_out", batch_size)


def patch_heads_all_pos(model, clean, corrupted, metric: Metric, batch_size: int | None = None) -> torch.Tensor:
    """Each attention head's output (hook_z) at every position at once -> [n_layers, n_heads]
    (NaN on layers whose mixer has no heads)."""
    clean, corrupted = check_pair(model, clean, corrupted)
    layers, n_heads = warn_headless(model, "patch_heads_all_pos"), model.cfg.n_heads
    names = {layer: f"blocks.{layer}.attn.hook_z" for layer in layers}
    cache = _clean_cache(model, clean, list(names.values()))
    patches = [Patch(layer, names[layer], _copy_head(cache[names[layer]], head))
               for layer in layers for head in range(n_heads)]
    out = torch.full((model.cfg.n_layers, n_heads), float("nan"))
    out[layers] = run_patches(model, corrupted, patches, metric, batch_size).view(len(layers), n_heads)
    return out


def patch_heads_by_pos(model, clean, corrupted, metric: Metric, batch_size: int | None = None) -> torch.Tensor:
    """Each attention head's output at one position at a time -> [n_layers, pos, n_heads] (NaN on
    layers whose mixer has no heads)."""
    clean, corrupted = check_pair(model, clean, corrupted)
    layers, n_heads, n_pos = warn_headless(model, "patch_heads_by_pos"), model.cfg.n_heads, clean.shape[1]
    names = {layer: f"blocks.{layer}.attn.hook_z" for layer in layers}
    cache = _clean_cache(model, clean, list(names.values()))
    patches = [Patch(layer, names[layer], _copy_head(cache[names[layer]], head, pos))
               for layer in layers for pos in range(n_pos) for head in range(n_heads)]
    out = torch.full((model.cfg.n_layers, n_pos, n_heads), float("nan"))
    out[layers] = run_patches(model, corrupted, patches, metric, batch_size).view(len(layers), n_pos, n_heads)
    return out


def patch_experts(model, clean, corrupted, metric: Metric, batch_size: int | None = None) -> torch.Tensor:
    """Each routed expert's weighted contribution, at every position at once -> [n_layers, n_experts]
    (NaN on dense layers). The corrupted run's expert output is swapped for the clean run's,
    wherever either run routed a token to that expert; the rest of the layer is untouched."""
    clean, corrupted = check_pair(model, clean, corrupted)
    layers = moe_layers(model)
    clean_parts = expert_contributions(model, clean, layers)
    corrupt_parts = expert_contributions(model, corrupted, layers)
    patches = []
    for layer in layers:
        delta = clean_parts[layer] - corrupt_parts[layer]  # [experts, batch, pos, d_model]
        for e in range(delta.shape[0]):
            patches.append(Patch(layer, f"blocks.{layer}.hook_mlp_out", _add(delta[e])))
    values = run_patches(model, corrupted, patches, metric, batch_size)
    out = torch.full((model.cfg.n_layers, model.cfg.n_experts), float("nan"))
    out[layers] = values.view(len(layers), model.cfg.n_experts)
    return out


def _add(delta: torch.Tensor):
    def apply(act):
        return act + delta.to(act.dtype)

    return apply


SWEEPS = {
    "resid_pre": patch_resid_pre,
    "attn_out": patch_attn_out,
    "mlp_out": patch_mlp_out,
    "heads": patch_heads_all_pos,
    "heads_by_pos": patch_heads_by_pos,
    "experts": patch_experts,
}
