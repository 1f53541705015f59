"""TransformerLens's weight processing on a HookedLM, in place: fold the norms' weights into the
layers that read them, centre the weights that write to the residual stream, centre the
unembedding, and fold the value biases into the output bias.

Each step leaves the model's log-probabilities unchanged (centring the unembedding moves every
logit of a position by the same amount) while making the weights easier to read: after folding,
`W_U[:, t]` is the direction whose dot product with the normalised residual stream is t's logit,
which is what direct logit attribution assumes. `harness.load` never processes;
`HookedLM.from_pretrained` does, with TransformerLens's defaults. The steps and their order are
TransformerLens's (`ProcessWeights.process_weights`): LayerNorm models get all four; RMSNorm models
only have their norm weights folded (no biases, no centring, since RMSNorm does not subtract
the mean) plus the unembedding centred and the value biases folded.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.errors import UnsupportedArchitectureError


def _bias_of(linear: nn.Linear) -> torch.Tensor:
    """The linear's bias, creating a zero one (so a fold has somewhere to go) if it has none."""
    if linear.bias is None:
        linear.bias = nn.Parameter(linear.weight.new_zeros(linear.out_features), requires_grad=linear.weight.requires_grad)
    return linear.bias


def _fold_norm_into(norm: nn.Module, readers: list[nn.Linear], fold_biases: bool, center: bool) -> None:
    """y = W (g * x_hat + b) + c  ->  (W g) x_hat + (W b + c); optionally centre W over its input."""
    gain = norm.w.float() + norm.offset
    for lin in readers:
        weight = lin.weight.float()
        if fold_biases and norm.b is not None:
            bias = _bias_of(lin)
            bias.copy_(bias.float() + weight @ norm.b.float())
        weight = weight * gain[None, :]
        if center:
            weight = weight - weight.mean(dim=1, keepdim=True)
        lin.weight.copy_(weight)
    norm.w.fill_(1.0 - norm.offset)  # the neutral weight: offset + w == 1
    if norm.b is not None:
        norm.b.zero_()


def _is_latent(attn: nn.Module) -> bool:
    # No q/k/v projections to fold into: latent attention, or a mixer without heads.
    return not hasattr(attn, "q_proj") or not hasattr(attn, "k_proj")


def untie_embeddings(model: nn.Module) -> None:
    """Give the unembedding its own copy of the embedding (processing changes them differently)."""
    if model.cfg.tie_embeddings:
        model.unembed.weight = nn.Parameter(model.embed.weight.detach().clone())
        model.cfg.tie_embeddings = False


@torch.no_grad()
def fold_layer_norm(model: nn.Module, fold_biases: bool | None = None, center_weights: bool | None = None) -> None:
    """Fold every input norm's weight (and, for LayerNorm, bias) into the layer reading it; the
    norms are left as pure normalisation (TransformerLens's LNPre / RMSPre)."""
    cfg = model.cfg
    if cfg.ln_folded:
        return
    layer_norm = cfg.norm == "layernorm"
    fold_biases = layer_norm if fold_biases is None else fold_biases
    center_weights = layer_norm if center_weights is None else center_weights
    if not cfg.pre_norm:
        raise UnsupportedArchitectureError(
            f"fold_ln: this {cfg.family} model normalises the sublayers' outputs, not their inputs, so there is no "
            "input norm to fold as TransformerLens does; load with fold_ln=False"
        )
    for i, block in enumerate(model.blocks):
        if _is_latent(block.attn):
            raise UnsupportedArchitectureError(
                f"fold_ln: layer {i} is a {cfg.mixers[i]} mixer, which has no q/k/v projection to fold its norm "
                "into as TransformerLens does; load with fold_ln=False"
            )
        if cfg.is_moe_layer(i):
            raise UnsupportedArchitectureError(
                f"fold_ln: layer {i} is a mixture of experts, which TransformerLens's folding does not cover "
                "here; load with fold_ln=False"
            )
    untie_embeddings(model)
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        _fold_norm_into(block.ln1, [attn.q_proj, attn.k_proj, attn.v_proj], fold_biases, center_weights)
        readers = [mlp.gate_proj, mlp.up_proj] if mlp.gated else [mlp.up_proj]
        _fold_norm_into(block.ln2, readers, fold_biases, center_weights)
    _fold_norm_into(model.ln_final, [model.unembed], fold_biases, center_weights)
    cfg.ln_folded = True


@torch.no_grad()
def center_writing_weights(model: nn.Module) -> None:
    """Make every vector written to the residual stream mean zero over d_model (embeddings,
    attention and MLP outputs and their biases). A LayerNorm that reads the stream subtracts the
    mean anyway, so nothing downstream changes; RMSNorm models are left alone, as in TransformerLens."""
    cfg = model.cfg
    if cfg.norm != "layernorm":
        return
    untie_embeddings(model)

    def center_rows(weight: torch.Tensor, dim: int) -> None:
        weight.copy_(weight - weight.mean(dim=dim, keepdim=True))

    center_rows(model.embed.weight, -1)
    if cfg.positional == "learned":
        center_rows(model.pos_embed.weight, -1)
    for i, block in enumerate(model.blocks):
        out = getattr(block.attn, "o_proj", None)  # every mixer here writes through one output projection
        writers = ([out] if out is not None else []) + ([] if cfg.is_moe_layer(i) else [block.mlp.down_proj])
        for lin in writers:  # weight [d_model, in]: centre each input's output vector
            center_rows(lin.weight, 0)
            if lin.bias is not None:
                center_rows(lin.bias, 0)


@torch.no_grad()
def center_unembed(model: nn.Module) -> None:
    """Subtract from each residual direction its mean effect over the vocabulary; softmax does not
    see it, so log-probabilities are unchanged while logits become relative to the mean logit."""
    untie_embeddings(model)
    weight = model.unembed.weight  # [d_vocab, d_model]
    weight.copy_(weight - weight.mean(dim=0, keepdim=True))
    if model.unembed.bias is not None:
        model.unembed.bias.copy_(model.unembed.bias - model.unembed.bias.mean())


@torch.no_grad()
def fold_value_biases(model: nn.Module) -> None:
    """Attention patterns sum to one, so a head's value bias always adds b_V @ W_O: move that
    into the layer's output bias, b_O += sum_h b_V[h] @ W_O[h], and zero b_V."""
    if model.cfg.attn_sinks and any(b.attn.v_proj.bias is not None for b in model.blocks if not _is_latent(b.attn)):
        raise UnsupportedArchitectureError(
            "fold_value_biases: attention sinks take part of every row's weight, so patterns do not sum to one "
            "and value biases cannot move into b_O; pass fold_value_biases=False"
        )
    for block in model.blocks:
        attn = block.attn
        if _is_latent(attn) or attn.v_proj.bias is None:
            continue
        b_v = attn.b_V.float()  # [n_heads, d_head], grouped heads repeated
        w_o = attn.W_O.float()  # [n_heads, d_head, d_model]
        bias = _bias_of(attn.o_proj)
        bias.copy_(bias.float() + torch.einsum("hd,hdm->m", b_v, w_o))
        attn.v_proj.bias.zero_()


# process_weights_'s flags share the steps' names, so it reaches them through this table.
_STEPS = {"center_writing_weights": center_writing_weights, "center_unembed": center_unembed,
          "fold_value_biases": fold_value_biases}


def process_weights_(
    model: nn.Module,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
    refactor_factored_attn_matrices: bool = False,
) -> nn.Module:
    """All of the above, in TransformerLens's order and with its per-norm rules."""
    if refactor_factored_attn_matrices:
        raise UnsupportedArchitectureError(
            "refactor_factored_attn_matrices is not implemented; use fold_ln/center_*/fold_value_biases only"
        )
    layer_norm = model.cfg.norm == "layernorm"
    if fold_ln:
        fold_layer_norm(model)
    if center_writing_weights and layer_norm:
        _STEPS["center_writing_weights"](model)
    if center_unembed:
        _STEPS["center_unembed"](model)
    if fold_value_biases:
        _STEPS["fold_value_biases"](model)
        if center_writing_weights and layer_norm:
            with torch.no_grad():
                for block in model.blocks:
                    bias = getattr(getattr(block.attn, "o_proj", None), "bias", None)
                    if bias is not None:
                        bias.copy_(bias - bias.mean())
    model.setup()
    return model
