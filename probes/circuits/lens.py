"""Logit lens and direct logit attribution.

    logit_lens(model, tokens)                    # [n_layers + 1, batch, d_vocab] at the last position
    logit_lens_diff(model, tokens, answers)      # [n_layers + 1] logit difference after each layer
    dla = direct_logit_attribution(model, tokens, answers)
    dla.heads, dla.mlps, dla.experts             # [n_layers, n_heads], [n_layers], [n_layers, n_experts]

The logit lens reads the residual stream entering each layer (and the final one) through the
final norm and unembedding. Direct logit attribution splits the final residual stream into the
pieces that were added to it (embeddings, each head, each MLP or expert) and projects each piece
onto the answer direction W_U[:, correct] - W_U[:, wrong], through the final norm with its scale
frozen at its actual value, so the pieces add up exactly to the logit difference (before any
final soft-capping). A layer whose mixer has no heads contributes through `attn_rest` alone (its
row of `heads` is zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probes.circuits.core import as_tokens
from probes.circuits.experts import contributions_from_cache


@torch.no_grad()
def residual_stack(model, tokens, pos: int = -1) -> torch.Tensor:
    """[n_layers + 1, batch, d_model]: the residual stream entering each block, then the final one."""
    tokens = as_tokens(model, tokens)
    n = model.cfg.n_layers
    names = [f"blocks.{l}.hook_resid_pre" for l in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[name][:, pos] for name in names])


@torch.no_grad()
def logit_lens(model, tokens, pos: int = -1) -> torch.Tensor:
    """Logits read off after each layer -> [n_layers + 1, batch, d_vocab]; entry 0 is the
    embeddings alone, the last entry the model's own logits."""
    return model.unembed_residual(residual_stack(model, tokens, pos))


def logit_lens_diff(model, tokens, answers: torch.Tensor, pos: int = -1) -> torch.Tensor:
    """Mean logit(answers[:, 0]) - logit(answers[:, 1]) read off after each layer -> [n_layers + 1]."""
    logits = logit_lens(model, tokens, pos)
    ans = torch.as_tensor(answers).long().to(logits.device)
    idx = ans[None].expand(logits.shape[0], -1, -1)
    return (logits.gather(-1, idx[..., :1]) - logits.gather(-1, idx[..., 1:2]))[..., 0].mean(-1).cpu()


def top_tokens(model, logits: torch.Tensor, k: int = 5) -> list[list[str]]:
    """The k most likely tokens (as text) for each row of logits [rows, d_vocab]."""
    ids = logits.topk(k, dim=-1).indices.tolist()
    return [[model.tokenizer.decode([i]) if model.tokenizer is not None else str(i) for i in row] for row in ids]


@dataclass
class DirectLogitAttribution:
    """Mean (over prompts) contribution of each piece to the logit difference."""

    embed: float  # token (+ position) embeddings
    heads: torch.Tensor  # [n_layers, n_heads]; zero on layers whose mixer has no heads
    attn_rest: torch.Tensor  # [n_layers]: attention output bias (zero for most models); a headless mixer's output
    mlps: torch.Tensor  # [n_layers]: whole MLP / MoE output
    experts: torch.Tensor | None  # [n_layers, n_experts] routed experts (NaN on dense layers), or None
    shared: torch.Tensor | None  # [n_layers] shared experts, or None
    norm_bias: float  # the final norm's bias
    total: float  # the logit difference the pieces add up to

    def by_layer(self) -> torch.Tensor:
        """[2 * n_layers]: attention then MLP contribution of each layer, interleaved."""
        attn = self.heads.sum(-1) + self.attn_rest
        return torch.stack([attn, self.mlps], dim=1).flatten()


@torch.no_grad()
def direct_logit_attribution(model, tokens, answers: torch.Tensor, pos: int = -1) -> DirectLogitAttribution:
    """Split the logit difference answers[:, 0] vs answers[:, 1] at `pos` over the model's pieces."""
    tokens = as_tokens(model, tokens)
    cfg = model.cfg
    n = cfg.n_layers
    moe = [l for l in range(n) if cfg.is_moe_layer(l)]
    names = ["hook_embed", "ln_final.hook_scale", f"blocks.{n - 1}.hook_resid_post"]
    names += ["hook_pos_embed"] if "hook_pos_embed" in model.hook_dict else []
    for l in range(n):
        names += [f"blocks.{l}.attn.hook_result"] if cfg.has_heads(l) else []
        names += [f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_mlp_out"]
        names += [f"blocks.{l}.ln1_post.hook_scale"] if cfg.post_attn_norm else []
    for l in moe:
        prefix = f"blocks.{l}.mlp"
        names += [f"{prefix}.hook_topk_indices", f"{prefix}.hook_topk_weights"]
        names += [f"{prefix}.experts.{e}.hook_out" for e in range(cfg.n_experts)]
        names += [f"{prefix}.hook_shared_out"] if cfg.n_shared_experts else []
    _, cache = model.run_with_cache(tokens, names_filter=names)

    ans = torch.as_tensor(answers).long().to(model.device)
    direction = (model.W_U[:, ans[:, 0]] - model.W_U[:, ans[:, 1]]).T.float()  # [batch, d_model]
    ln = model.ln_final
    weight = (ln.w.float() + ln.offset) * direction  # fold the norm's weight into the direction
    scale = cache["ln_final.hook_scale"][:, pos].float()  # [batch, 1]

    def project(x: torch.Tensor) -> torch.Tensor:
        """Mean contribution of a piece [batch, ..., d_model] (at `pos`) through the frozen final norm."""
        x = x.float()
        if ln.kind == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        s = scale.view(-1, *[1] * (x.dim() - 1))
        w = weight.view(weight.shape[0], *[1] * (x.dim() - 2), -1)
        return ((x / s) * w).sum(-1).mean(0).cpu()

    at = lambda name: cache[name][:, pos]  # noqa: E731
    embed = project(at("hook_embed")) + (project(at("hook_pos_embed")) if "hook_pos_embed" in names else 0.0)
    heads, attn_rest, mlps = torch.zeros(n, cfg.n_heads), torch.zeros(n), torch.zeros(n)
    experts = torch.full((n, cfg.n_experts), float("nan")) if moe else None
    shared = torch.zeros(n) if moe and cfg.n_shared_experts else None
    for l in range(n):
        if cfg.has_heads(l):
            result = at(f"blocks.{l}.attn.hook_result")  # [batch, head, d_model]
            if cfg.post_attn_norm:  # a post-attention norm rescales the sum of the heads; freeze it too
                post = model.blocks[l].ln1_post
                post_scale = at(f"blocks.{l}.ln1_post.hook_scale")[:, None].float()
                result = result.float() / post_scale * (post.w.float() + post.offset)
            heads[l] = project(result)
        attn_rest[l] = project(at(f"blocks.{l}.hook_attn_out")) - heads[l].sum()
        mlps[l] = project(at(f"blocks.{l}.hook_mlp_out"))
        if l in moe:
            parts = contributions_from_cache(cache, l, cfg.n_experts, tuple(tokens.shape) + (cfg.d_model,))
            experts[l] = project(parts[:, :, pos].transpose(0, 1))  # [batch, experts, d_model]
            if shared is not None:
                shared[l] = project(at(f"blocks.{l}.mlp.hook_shared_out"))
    norm_bias = float((ln.b.float() * direction).sum(-1).mean()) if ln.b is not None else 0.0
    total = float(project(at(f"blocks.{n - 1}.hook_resid_post"))) + norm_bias
    return DirectLogitAttribution(float(embed), heads, attn_rest, mlps, experts, shared, norm_bias, total)
