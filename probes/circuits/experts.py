"""Per-expert contributions of mixture-of-experts layers, as [batch, pos, d_model] tensors, so
experts can be patched and attributed like heads."""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from harness.models.moe import routed_positions


def moe_layers(model) -> list[int]:
    layers = [i for i in range(model.cfg.n_layers) if model.cfg.is_moe_layer(i)]
    if not layers:
        raise ConfigError(f"this {model.cfg.family} model has no mixture-of-experts layers; "
                          "expert analyses need an MoE model")
    return layers


def contributions_from_cache(cache, layer: int, n_experts: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """[experts, batch, pos, d_model]: each expert's routing-weighted output in `layer`, read from
    a cache holding the layer's hook_topk_indices, hook_topk_weights and experts.*.hook_out."""
    prefix = f"blocks.{layer}.mlp"
    indices, weights = cache[f"{prefix}.hook_topk_indices"], cache[f"{prefix}.hook_topk_weights"]
    out = torch.zeros(n_experts, *shape, dtype=torch.float32, device=indices.device)
    for e in range(n_experts):
        rows = cache[f"{prefix}.experts.{e}.hook_out"]
        where = routed_positions(indices, e)  # rows come in this (batch, pos) order
        if not len(where):
            continue
        b, p = where[:, 0], where[:, 1]
        w = (weights[b, p] * (indices[b, p] == e)).sum(-1)  # this expert's weight for each token
        out[e, b, p] = rows.float() * w[:, None].float()
    return out


@torch.no_grad()
def expert_contributions(model, tokens: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """{layer: [experts, batch, pos, d_model]} for the given MoE layers on `tokens`."""
    if model.cfg.post_mlp_norm:
        raise ConfigError("expert contributions are not additive behind a post-MLP norm; "
                          "patch hook_mlp_out instead")
    names = []
    for layer in layers:
        prefix = f"blocks.{layer}.mlp"
        names += [f"{prefix}.hook_topk_indices", f"{prefix}.hook_topk_weights"]
        names += [f"{prefix}.experts.{e}.hook_out" for e in range(model.cfg.n_experts)]
    _, cache = model.run_with_cache(tokens, names_filter=names, stop_at_layer=max(layers) + 1)
    shape = (tokens.shape[0], tokens.shape[1], model.cfg.d_model)
    return {layer: contributions_from_cache(cache, layer, model.cfg.n_experts, shape) for layer in layers}
