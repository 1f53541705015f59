"""Path patching: the effect of sender heads on the metric *through* receiver heads' queries,
keys or values only (Wang et al. 2022, the IOI paper).

Convention (as in that paper, "noising"): the model runs on the clean prompts, and the senders'
outputs are taken from the corrupted run. Two passes:
1. clean run with every head's output frozen to its clean value, except the senders, which get
   their corrupted value; MLPs and norms are recomputed. Record the receivers' q/k/v inputs.
2. clean run with only those receivers' q/k/v replaced by the recorded values; measure.
A large drop of the metric means the senders matter to the receivers along that input.

    path_patch(model, clean, corrupted, metric, senders=[(9, 9)], receivers=[(10, 0)], receiver_input="q")
    path_patch_sweep(model, clean, corrupted, metric, receivers=[(10, 0)], receiver_input="q")  # [layers, heads]

With grouped-query attention, a k/v receiver shares its key/value head with the other query heads
of its group, so patching it patches them too. A layer whose mixer has no heads is recomputed in
pass 1, like the MLPs; its heads can be neither senders nor receivers (a NaN row in the sweep).
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from probes.circuits.core import (
    Metric,
    check_head,
    check_pair,
    final_logits,
    head_dim_index,
    head_layers,
    scalar,
    warn_headless,
)
from probes.circuits.patching import default_batch_size

INPUTS = ("q", "k", "v")


def _check_heads(model, heads, what):
    if not heads:
        raise ConfigError(f"no {what} heads given; pass a list of (layer, head)")
    return [check_head(model, l, h, f"{what} head") for l, h in heads]


@torch.no_grad()
def path_patch_many(model, clean, corrupted, metric: Metric, sender_sets: list[list[tuple[int, int]]],
                    receivers, receiver_input: str = "q", batch_size: int | None = None) -> torch.Tensor:
    """The metric after path patching each set of senders to the receivers -> [len(sender_sets)]."""
    if receiver_input not in INPUTS:
        raise ConfigError(f"receiver_input must be one of q, k, v; got {receiver_input!r}")
    clean, corrupted = check_pair(model, clean, corrupted)
    receivers = _check_heads(model, receivers, "receiver")
    n_layers, b = model.cfg.n_layers, clean.shape[0]
    z_names = [f"blocks.{l}.attn.hook_z" for l in head_layers(model)]
    _, clean_cache = model.run_with_cache(clean, names_filter=z_names)
    _, corrupt_cache = model.run_with_cache(corrupted, names_filter=z_names)
    in_names = sorted({f"blocks.{l}.attn.hook_{receiver_input}" for l, _ in receivers})
    top = max(l for l, _ in receivers) + 1
    batch_size = batch_size or default_batch_size(b)
    out = torch.empty(len(sender_sets))
    for lo in range(0, len(sender_sets), batch_size):
        chunk = [_check_heads(model, s, "sender") for s in sender_sets[lo : lo + batch_size]]
        k = len(chunk)
        tokens = clean.repeat(k, 1)

        # Pass 1: freeze every head to clean except each run's senders, record the receivers' inputs.
        def freeze(act, hook):
            layer = int(hook.name.split(".")[1])
            act[:] = clean_cache[hook.name].repeat(k, 1, 1, 1)
            for j, senders in enumerate(chunk):
                for l, h in senders:
                    if l == layer:
                        act[j * b : (j + 1) * b, :, h] = corrupt_cache[hook.name][:, :, h]
            return act

        recorded = {}

        def record(act, hook):
            recorded[hook.name] = act.clone()

        hooks = [(n, freeze) for n in z_names if int(n.split(".")[1]) < top] + [(n, record) for n in in_names]
        with model.hooks(fwd_hooks=hooks):
            model(tokens, stop_at_layer=top)

        # Pass 2: clean run with only the receivers' inputs replaced.
        def replace(act, hook):
            layer = int(hook.name.split(".")[1])
            for l, h in receivers:
                if l == layer:
                    i = head_dim_index(act, h, model.cfg.n_heads)
                    act[:, :, i] = recorded[hook.name][:, :, i]
            return act

        with model.hooks(fwd_hooks=[(n, replace) for n in in_names]):
            logits = final_logits(model, model(tokens, stop_at_layer=n_layers), metric)
        for j in range(k):
            out[lo + j] = scalar(metric, logits[j * b : (j + 1) * b]).item()
    return out


def path_patch(model, clean, corrupted, metric: Metric, senders, receivers, receiver_input: str = "q") -> float:
    """The metric after patching the path from `senders` [(layer, head)] to the receivers' input."""
    return float(path_patch_many(model, clean, corrupted, metric, [list(senders)], receivers, receiver_input)[0])


def path_patch_sweep(model, clean, corrupted, metric: Metric, receivers, receiver_input: str = "q",
                     batch_size: int | None = None) -> torch.Tensor:
    """Each head in turn as the only sender -> [n_layers, n_heads]; NaN for heads at or after the
    first receiver's layer (they have no path to it)."""
    receivers = _check_heads(model, receivers, "receiver")
    first = min(l for l, _ in receivers)
    n_heads = model.cfg.n_heads
    layers = [l for l in warn_headless(model, "path_patch_sweep") if l < first]
    senders = [[(l, h)] for l in layers for h in range(n_heads)]
    out = torch.full((model.cfg.n_layers, n_heads), float("nan"))
    if senders:
        values = path_patch_many(model, clean, corrupted, metric, senders, receivers, receiver_input, batch_size)
        out[layers] = values.view(len(layers), n_heads)
    return out
