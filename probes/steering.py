"""Steering and directional ablation.

    hooks = steering_hooks(v, ["blocks.9.hook_resid_pre"], scale=1.0)   # add scale * v there
    hooks = ablation_hooks(model, v)              # project v out of the residual stream everywhere
    replies = generate(model, prompts, fwd_hooks=hooks, max_new_tokens=32)
    ortho = orthogonalize(model, v)               # the same ablation baked into the weights
    export_orthogonalized(model, v, "ckpt/")      # ... saved as a folder harness.load reads

Ablation removes the component along unit(v) from every residual-stream read point (resid_pre,
resid_mid, resid_post of every block). Orthogonalising every matrix that *writes* to the stream
(embeddings, attention output and MLP/expert down projections, with their biases) against v
gives the same model: the stream then never holds a component along v in the first place.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from harness.errors import ShapeError, UnsupportedArchitectureError
from harness.models.moe import Experts
from probes.activations import encode_prompts

ABLATION_POINTS = ("resid_pre", "resid_mid", "resid_post")


def _unit(v: torch.Tensor) -> torch.Tensor:
    v = v.detach().float().flatten()
    return v / v.norm().clamp(min=1e-12)


def _check_width(model, v: torch.Tensor) -> None:
    if v.numel() != model.cfg.d_model:
        raise ShapeError(f"direction has {v.numel()} dimensions but the model's d_model is {model.cfg.d_model}; "
                         "was it computed on another model?")


def steering_hooks(direction: torch.Tensor, hooks: Sequence[str], scale: float = 1.0) -> list:
    """Forward hooks adding `scale * direction` at every position of each named hook."""
    v = direction.detach().flatten()

    def add(x, hook):
        return x + scale * v.to(x.device, x.dtype)

    return [(name, add) for name in hooks]


def ablation_hooks(model, direction: torch.Tensor, points: Sequence[str] = ABLATION_POINTS) -> list:
    """Forward hooks projecting unit(direction) out of `blocks.{i}.hook_{point}` for every layer."""
    _check_width(model, direction)
    u = _unit(direction)

    def project_out(x, hook):
        uu = u.to(x.device, x.dtype)
        return x - (x @ uu)[..., None] * uu

    names = [f"blocks.{i}.hook_{p}" for i in range(model.cfg.n_layers) for p in points]
    model.check_hook_names(names)
    return [(name, project_out) for name in names]


@torch.no_grad()
def generate(model, prompts: Sequence[str], fwd_hooks: Sequence = (), max_new_tokens: int = 32,
             chat: bool | str = "auto", system: str | list[dict] | None = None, batch_size: int = 16) -> list[str]:
    """Greedy replies (the new text only, up to the end token) with `fwd_hooks` active throughout."""
    tok = model.tokenizer
    eos = tok.eos_token_id
    replies = []
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        for start in range(0, len(prompts), batch_size):
            tokens, mask = encode_prompts(model, prompts[start : start + batch_size], chat, system)
            out = model.generate(tokens, attention_mask=mask, max_new_tokens=max_new_tokens, return_type="tokens",
                                 do_sample=False)
            for row in out[:, tokens.shape[1]:].tolist():
                if eos in row:
                    row = row[: row.index(eos)]
                replies.append(tok.decode(row, skip_special_tokens=True).strip())
    return replies


# ---------------------------------------------------------------------------- weight orthogonalisation

def _rows_out(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Rows live in the residual space (embeddings): w - (w u) u^T."""
    return w - (w @ u)[..., None] * u


def _outputs_out(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """w [..., d_model, d_in] writes into the residual space: w - u (u^T w)."""
    return w - u[:, None] * (u @ w)[..., None, :]


@torch.no_grad()
def orthogonalize(model, direction: torch.Tensor):
    """A copy of `model` whose residual-stream writers are orthogonal to `direction`."""
    cfg = model.cfg
    _check_width(model, direction)
    if cfg.post_attn_norm or cfg.post_mlp_norm:
        # A norm after o_proj/down_proj rescales each coordinate, so orthogonal weights would not
        # keep the written vector orthogonal; use ablation_hooks for these models.
        raise UnsupportedArchitectureError(
            f"weight orthogonalisation is not exact for {cfg.family} (norms after attention/MLP outputs); "
            "use the ablation hooks instead")
    out = copy.deepcopy(model)
    u = _unit(direction).to(out.device)
    if out.cfg.tie_embeddings:
        # The unembedding reads the stream, it does not write it: give it its own unchanged copy.
        out.unembed.weight = nn.Parameter(out.embed.weight.detach().clone())
        out.cfg = dataclasses.replace(out.cfg, tie_embeddings=False)
    writers = [out.embed] + ([out.pos_embed] if hasattr(out, "pos_embed") else [])
    for emb in writers:
        emb.weight.copy_(_rows_out(emb.weight.float(), u).to(emb.weight.dtype))
    for name, module in out.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear) and leaf in ("o_proj", "down_proj") and module.out_features == cfg.d_model:
            module.weight.copy_(_outputs_out(module.weight.float(), u).to(module.weight.dtype))
            if module.bias is not None:
                module.bias.copy_(_rows_out(module.bias.float(), u).to(module.bias.dtype))
        elif isinstance(module, Experts):
            module.down_proj.copy_(_outputs_out(module.down_proj.float(), u).to(module.down_proj.dtype))
    out.identity = {**model.identity, "name": f"{model.identity.get('name') or cfg.name}-orthogonalized",
                    "weights_sha256": None}
    return out


def export_orthogonalized(model, direction: torch.Tensor, folder, metadata: dict | None = None) -> Path:
    """Orthogonalise and save as a Hugging Face folder that `harness.load` reads back.

    Saving goes through harness.training.checkpoint: a model loaded from a transformers checkpoint
    is written in its own layout, one built from scratch as a Llama; GPT-2 (whose fused Conv1D
    weights are not a rename) raises a CheckpointError."""
    from harness.training.checkpoint import save_checkpoint

    ortho = orthogonalize(model, direction)
    meta = {"orthogonalized": {"source": model.identity.get("name"), **(metadata or {})}}
    return save_checkpoint(ortho, Path(folder), metadata=meta,
                           description=f"{model.identity.get('name') or 'model'} with a direction orthogonalised out")
