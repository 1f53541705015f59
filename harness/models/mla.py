"""Multi-head latent attention (DeepSeek-V2/V3).

Keys and values come from one small latent per token (kv_lora_rank wide, RMS-normed), expanded per
head by `kv_b_proj`; queries optionally go through their own latent. Position enters only through
a separate slice of each head (the last `rotary_dim` features): the query's own rope part, and one
rope key shared by all heads, taken straight from the residual stream ("decoupled" rope).

The cache holds the expanded per-head keys and values, like dense attention, so hooks on k and v
mean the same thing with or without a cache (it costs more memory than caching the latent).
"""

from __future__ import annotations

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from harness.models.components import Attention, Norm, _has_hooks, apply_rotary, effective_weight, unsupported
from harness.models.config import ModelConfig
from harness.models.linear import Linear

LATENT_NORM_EPS = 1e-6  # transformers builds the latent norms with the default eps, not rms_norm_eps


def apply_rotary_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x0, x1), (x2, x3), ... of x [..., rot_dim]. The result lists the rotated even
    features, then the odd ones (queries and keys are permuted alike, so their dot products are
    those of the interleaved layout)."""
    half = cos.shape[-1] // 2
    cos, sin = cos[..., :half], sin[..., :half]  # cos/sin repeat their angles in both halves
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.cat((even * cos - odd * sin, odd * cos + even * sin), dim=-1)


class LatentAttention(Attention):
    """Latent attention sharing Attention's kernels (fused/eager), output and TransformerLens hooks;
    only how queries, keys and values are made differs. Extra hooks: `hook_q_latent`
    [batch, pos, q_lora_rank] and `hook_kv_latent` [batch, pos, kv_lora_rank], both after their norms."""

    def __init__(self, cfg: ModelConfig, layer: int):
        nn.Module.__init__(self)  # not Attention.__init__: the projections are different
        self.cfg, self.layer = cfg, layer
        h, d_qk = cfg.n_heads, cfg.d_head
        self.d_rope, self.d_v = cfg.rotary_dim, cfg.v_head_dim or cfg.d_head
        self.d_nope = d_qk - self.d_rope
        if cfg.q_lora_rank is not None:
            self.q_a_proj = Linear(cfg.d_model, cfg.q_lora_rank, bias=cfg.attn_bias)
            self.q_a_norm = Norm(cfg.q_lora_rank, "rmsnorm", LATENT_NORM_EPS)
            self.q_b_proj = Linear(cfg.q_lora_rank, h * d_qk, bias=False)
            self.hook_q_latent = HookPoint()
        else:
            self.q_proj = Linear(cfg.d_model, h * d_qk, bias=False)
        self.kv_a_proj = Linear(cfg.d_model, cfg.kv_lora_rank + self.d_rope, bias=cfg.attn_bias)
        self.kv_a_norm = Norm(cfg.kv_lora_rank, "rmsnorm", LATENT_NORM_EPS)
        self.kv_b_proj = Linear(cfg.kv_lora_rank, h * (self.d_nope + self.d_v), bias=False)
        self.o_proj = Linear(h * self.d_v, cfg.d_model, bias=cfg.attn_out_bias)
        if cfg.attn_sinks:
            self.sinks = nn.Parameter(torch.zeros(h))
        self.scale = cfg.attn_scale if cfg.attn_scale is not None else d_qk**-0.5
        names = ("q", "k", "v", "rot_q", "rot_k", "attn_scores", "pattern", "z", "result", "kv_latent")
        for name in names:
            setattr(self, f"hook_{name}", HookPoint())

    @property
    def W_O(self) -> torch.Tensor:
        return effective_weight(self.o_proj).T.reshape(self.cfg.n_heads, self.d_v, self.cfg.d_model)

    W_Q = W_K = W_V = _W_K = _W_V = b_Q = b_K = b_V = _b_K = _b_V = unsupported(lambda self: (
        "latent attention has no per-head W_Q/W_K/W_V: the path runs through a normed latent; "
        "use q_b_proj / kv_b_proj and the hook_q_latent / hook_kv_latent activations"))

    def project(self, x: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        b, p, _ = x.shape
        h = cfg.n_heads
        if cfg.q_lora_rank is not None:
            q = self.q_b_proj(self.hook_q_latent(self.q_a_norm(self.q_a_proj(x))))
        else:
            q = self.q_proj(x)
        q = self.hook_q(q.view(b, p, h, cfg.d_head))

        latent, k_rope = self.kv_a_proj(x).split([cfg.kv_lora_rank, self.d_rope], dim=-1)
        latent = self.hook_kv_latent(self.kv_a_norm(latent))
        k_nope, v = self.kv_b_proj(latent).view(b, p, h, -1).split([self.d_nope, self.d_v], dim=-1)
        k_rope = k_rope[:, :, None, :]  # one rope key, shared by every head
        v = self.hook_v(v)
        if rope is not None and not _has_hooks(self.hook_k):
            # Rotate the shared rope key once, then give every head a copy: the same keys as
            # rotating the full per-head k below, for 1/n_heads of the rope work.
            q = self.hook_rot_q(self._rotate(q, rope))
            k_rope = self._rotate_part(k_rope, rope)
            return q, self.hook_rot_k(torch.cat((k_nope, k_rope.expand(b, p, h, self.d_rope)), dim=-1)), v
        k = self.hook_k(torch.cat((k_nope, k_rope.expand(b, p, h, self.d_rope)), dim=-1))
        if rope is not None:
            q = self.hook_rot_q(self._rotate(q, rope))
            k = self.hook_rot_k(self._rotate(k, rope))
        return q, k, v

    def _rotate(self, x: torch.Tensor, rope) -> torch.Tensor:
        # Only the last d_rope features carry position.
        nope, part = x.split([self.d_nope, self.d_rope], dim=-1)
        return torch.cat((nope, self._rotate_part(part, rope)), dim=-1)

    def _rotate_part(self, part: torch.Tensor, rope) -> torch.Tensor:
        rotate = apply_rotary_interleaved if self.cfg.rope_interleave else apply_rotary
        return rotate(part, *rope)
