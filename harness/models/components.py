"""The building blocks every family is assembled from: norms, rotary embeddings, attention and MLPs.

Each module exposes its intermediates through TransformerLens `HookPoint`s with TransformerLens's
names, so analysis code written for TransformerLens runs unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from harness.errors import UnsupportedArchitectureError
from harness.models.config import ModelConfig
from harness.models.kv_cache import KVState, LayerState
from harness.models.linear import Linear

# ---------------------------------------------------------------------------------------- norms


class Norm(nn.Module):
    """LayerNorm or RMSNorm, computed in float32. `hook_scale` is the divisor and
    `hook_normalized` the unit-scale input before the learned weight, as in TransformerLens."""

    def __init__(self, dim: int, kind: str, eps: float, offset: float = 0.0):
        super().__init__()
        self.kind, self.eps, self.offset = kind, eps, offset
        # Gemma stores w and scales by (1 + w), so its neutral weight is zero.
        self.w = nn.Parameter(torch.full((dim,), 1.0 - offset))
        self.b = nn.Parameter(torch.zeros(dim)) if kind == "layernorm" else None
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = self.hook_normalized(x * scale.reciprocal())  # one small reciprocal, then a cheap multiply
        if self.offset:
            # Gemma multiplies in float32 before casting back.
            return (x * (self.offset + self.w.float())).to(dtype)
        x = x.to(dtype) * self.w
        return x + self.b if self.b is not None else x


# ---------------------------------------------------------------------------------------- rotary


def rope_inv_freq(dim: int, theta: float, scaling: dict | None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies for rotary embeddings, and the factor cos/sin are multiplied by."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / scaling["factor"], 1.0
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, scaling), 1.0
    if kind == "yarn":
        return _yarn_inv_freq(inv_freq, dim, theta, scaling)
    raise UnsupportedArchitectureError(
        f"rope scaling {kind!r} is not supported; supported: default, linear, llama3, yarn"
    )


def _llama3_inv_freq(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    # Llama 3.1: long wavelengths are divided by `factor`, short ones kept, the band between blended.
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, blended, scaled)


def _yarn_inv_freq(inv_freq: torch.Tensor, dim: int, theta: float, s: dict) -> tuple[torch.Tensor, float]:
    # YaRN: interpolate low frequencies, keep high ones, ramp between; scale attention by mscale.
    factor = s["factor"]
    old_len = s["original_max_position_embeddings"]
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        if s.get("mscale") and s.get("mscale_all_dim"):
            attention_factor = mscale(factor, s["mscale"]) / mscale(factor, s["mscale_all_dim"])
        else:
            attention_factor = mscale(factor)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    inv_freq = (inv_freq / factor) * (1 - extrapolation) + inv_freq * extrapolation
    return inv_freq, attention_factor


class Rotary(nn.Module):
    """Computes cos/sin for given positions (half-split layout, as Hugging Face's `rotate_half`)."""

    def __init__(self, dim: int, theta: float, scaling: dict | None):
        super().__init__()
        inv_freq, self.attention_factor = rope_inv_freq(dim, theta, scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * self.inv_freq.float()  # [batch, pos, dim/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * self.attention_factor, emb.sin() * self.attention_factor
        return cos.to(dtype)[:, :, None, :], sin.to(dtype)[:, :, None, :]  # broadcast over heads


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` features of x [batch, pos, head, d_head]."""
    rot_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    half = rot_dim // 2
    rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    out = x_rot * cos + rotated * sin
    return torch.cat((out, x_pass), dim=-1) if x_pass.shape[-1] else out


# ---------------------------------------------------------------------------------------- attention


@dataclass
class AttentionMask:
    """What a layer may attend to. `mask` is boolean [batch, 1, q, k] (True = attend) or None,
    meaning plain causal attention over the whole sequence (or everything, for one new token)."""

    mask: torch.Tensor | None
    is_causal: bool


@dataclass
class MixerInputs:
    """What a token mixer reads besides its input x [batch, pos, d_model]. Each kind takes what it
    needs: attention the rope and mask of its layer type, a recurrent mixer the padding (so pad
    tokens never enter its state). `state` is the layer's generation state (None without a cache)."""

    rope: tuple[torch.Tensor, torch.Tensor] | None
    mask: AttentionMask
    padding: torch.Tensor | None = None  # [batch, pos] 1 for this call's real tokens; None: all real
    state: LayerState | None = None


def effective_weight(linear: nn.Module) -> torch.Tensor:
    """A projection's weight as its forward applies it: plus any active, unmerged LoRA adapter
    (peft wraps the nn.Linear and keeps the base weight as `.weight`), so the TransformerLens-style
    W_Q/W_K/W_V/W_O views and hook_result describe an adapted model before it is merged."""
    weight = linear.weight
    if not hasattr(linear, "get_delta_weight") or linear.disable_adapters:
        return weight
    for name in linear.active_adapters:
        if name in linear.lora_A and name not in linear.merged_adapters:
            weight = weight + linear.get_delta_weight(name)
    return weight


def unsupported(message) -> property:
    """A TransformerLens weight attribute a module cannot offer: reading it raises
    UnsupportedArchitectureError(message(module)), saying what to read instead."""

    def refuse(self):
        raise UnsupportedArchitectureError(message(self))

    return property(refuse)


def _has_hooks(hook: nn.Module) -> bool:
    # Anything standing in for the HookPoint (an attached SAE) counts as a hook.
    return not isinstance(hook, HookPoint) or bool(hook.fwd_hooks or hook.bwd_hooks)


class FactoredViews:
    """TransformerLens's QK and OV circuits as FactoredMatrix, for anything with W_Q, W_K, W_V
    and W_O views: one attention layer, or the whole model (stacked over layers)."""

    @property
    def QK(self):
        from transformer_lens.FactoredMatrix import FactoredMatrix

        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self):
        from transformer_lens.FactoredMatrix import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)


class Attention(FactoredViews, nn.Module):
    """Multi-head, grouped-query and multi-query attention with optional QK-norm, rotary, sliding
    window, score soft-capping and attention sinks. Runs PyTorch's fused SDPA unless scores or
    pattern are hooked, or soft-capping or sinks (which SDPA cannot express) are on."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        h, kv, dh = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        self.q_proj = Linear(cfg.d_model, h * dh, bias=cfg.attn_bias)
        self.k_proj = Linear(cfg.d_model, kv * dh, bias=cfg.attn_bias)
        self.v_proj = Linear(cfg.d_model, kv * dh, bias=cfg.attn_bias)
        self.o_proj = Linear(h * dh, cfg.d_model, bias=cfg.attn_out_bias)
        if cfg.qk_norm:
            whole = cfg.qk_norm_scope == "projection"  # OLMo 2 normalises all heads' features together
            self.q_norm = Norm(h * dh if whole else dh, "rmsnorm", cfg.norm_eps, cfg.norm_offset)
            self.k_norm = Norm(kv * dh if whole else dh, "rmsnorm", cfg.norm_eps, cfg.norm_offset)
        if cfg.attn_sinks:
            self.sinks = nn.Parameter(torch.zeros(h))
        self.scale = cfg.attn_scale if cfg.attn_scale is not None else dh**-0.5
        hooks = ["q", "k", "v", "attn_scores", "pattern", "z", "result"]
        if cfg.positional == "rotary":
            hooks += ["rot_q", "rot_k"]  # only models with rotary embeddings have rotated q/k
        for name in hooks:
            setattr(self, f"hook_{name}", HookPoint())

    # TransformerLens-shaped weight views, for circuit analysis ([head, d_model, d_head] etc.).
    # Grouped key/value heads are repeated to n_heads as TransformerLens does (each query head's
    # own view); `_W_K`, `_W_V`, `_b_K`, `_b_V` keep the n_kv_heads actually stored.
    def _heads(self, linear: nn.Module, n: int) -> torch.Tensor:
        return effective_weight(linear).T.reshape(self.cfg.d_model, n, -1).transpose(0, 1)

    def _bias(self, linear: nn.Module, n: int) -> torch.Tensor:
        if linear.bias is None:
            return linear.weight.new_zeros(n, linear.weight.shape[0] // n)
        return linear.bias.reshape(n, -1)

    def _ungroup(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.cfg.n_rep, dim=0) if self.cfg.n_rep > 1 else x

    @property
    def W_Q(self) -> torch.Tensor:
        return self._heads(self.q_proj, self.cfg.n_heads)

    @property
    def _W_K(self) -> torch.Tensor:
        return self._heads(self.k_proj, self.cfg.n_kv_heads)

    @property
    def _W_V(self) -> torch.Tensor:
        return self._heads(self.v_proj, self.cfg.n_kv_heads)

    @property
    def W_K(self) -> torch.Tensor:
        return self._ungroup(self._W_K)

    @property
    def W_V(self) -> torch.Tensor:
        return self._ungroup(self._W_V)

    @property
    def W_O(self) -> torch.Tensor:
        return effective_weight(self.o_proj).T.reshape(self.cfg.n_heads, -1, self.cfg.d_model)

    @property
    def b_Q(self) -> torch.Tensor:
        return self._bias(self.q_proj, self.cfg.n_heads)

    @property
    def _b_K(self) -> torch.Tensor:
        return self._bias(self.k_proj, self.cfg.n_kv_heads)

    @property
    def _b_V(self) -> torch.Tensor:
        return self._bias(self.v_proj, self.cfg.n_kv_heads)

    @property
    def b_K(self) -> torch.Tensor:
        return self._ungroup(self._b_K)

    @property
    def b_V(self) -> torch.Tensor:
        return self._ungroup(self._b_V)

    @property
    def b_O(self) -> torch.Tensor:
        bias = self.o_proj.bias
        return bias if bias is not None else self.o_proj.weight.new_zeros(self.cfg.d_model)

    def new_state(self, capacity: int) -> LayerState:
        return KVState(capacity)

    def forward(self, x: torch.Tensor, inputs: MixerInputs) -> torch.Tensor:
        cfg = self.cfg
        b, p, _ = x.shape
        q, k, v = self.project(x, inputs.rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [batch, head, pos, d_head]
        if inputs.state is not None:
            k, v = inputs.state.update(k, v)

        eager = (cfg.attn_softcap is not None or cfg.attn_sinks or _has_hooks(self.hook_attn_scores)
                 or _has_hooks(self.hook_pattern))
        z = self._eager(q, k, v, inputs.mask) if eager else self._fused(q, k, v, inputs.mask)
        z = self.hook_z(z.transpose(1, 2))  # [batch, pos, head, d_head]

        if _has_hooks(self.hook_result):
            # Per-head contributions to the residual stream; only built when asked for (it is large).
            result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, self.W_O))
            out = result.sum(dim=2)
            return out + self.o_proj.bias if self.o_proj.bias is not None else out
        return self.o_proj(z.reshape(b, p, -1))

    def project(self, x: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values [batch, pos, head, d_head], rotated where there is rope.
        (The extension point for other ways of making them, such as latent attention.)"""
        cfg = self.cfg
        b, p, _ = x.shape
        q = self.hook_q(self.q_proj(x).view(b, p, cfg.n_heads, cfg.d_head))
        k = self.hook_k(self.k_proj(x).view(b, p, cfg.n_kv_heads, cfg.d_head))
        v = self.hook_v(self.v_proj(x).view(b, p, cfg.n_kv_heads, cfg.d_head))
        if cfg.qk_norm and cfg.qk_norm_scope == "projection":
            q, k = self.q_norm(q.flatten(-2)).view_as(q), self.k_norm(k.flatten(-2)).view_as(k)
        elif cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = self.hook_rot_q(apply_rotary(q, *rope))
            k = self.hook_rot_k(apply_rotary(k, *rope))
        return q, k, v

    def _fused(self, q, k, v, mask: AttentionMask) -> torch.Tensor:
        # enable_gqa lets the kernel share each key/value head without copying it n_rep times.
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.mask, is_causal=mask.is_causal, scale=self.scale, enable_gqa=self.cfg.n_rep > 1
        )

    def _eager(self, q, k, v, mask: AttentionMask) -> torch.Tensor:
        rep = self.cfg.n_rep
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # [batch, head, q, k]
        if self.cfg.attn_softcap is not None:
            cap = self.cfg.attn_softcap
            scores = torch.tanh(scores / cap) * cap
        allowed = mask.mask
        if allowed is None and mask.is_causal:
            qn, kn = scores.shape[-2:]
            allowed = torch.ones(qn, kn, dtype=torch.bool, device=scores.device).tril(kn - qn)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        scores = self.hook_attn_scores(scores)
        if self.cfg.attn_sinks:
            # The sink is one more logit per head in every row; its weight is dropped with it, so
            # a row of the pattern sums to less than one (what the sink absorbed).
            sink = self.sinks.to(scores.dtype).view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
            probs = F.softmax(torch.cat((scores, sink), dim=-1), dim=-1, dtype=torch.float32)[..., :-1]
        else:
            probs = F.softmax(scores, dim=-1, dtype=torch.float32)
        pattern = self.hook_pattern(probs.to(q.dtype))
        return torch.matmul(pattern, v)


# ---------------------------------------------------------------------------------------- MLP


def activation(name: str):
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    return {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}[name]


class GatedActivation:
    """act(gate) * up, or GPT-OSS's clamped SwiGLU where cfg.glu_limit is set (see ModelConfig)."""

    def __init__(self, cfg: ModelConfig):
        self.act, self.limit, self.alpha = activation(cfg.act_fn), cfg.glu_limit, cfg.glu_alpha

    def __call__(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if self.limit is None:
            hidden = self.act(gate)
            return hidden.mul_(up) if not hidden.requires_grad else hidden * up  # one buffer fewer at inference
        gate, up = gate.clamp(max=self.limit), up.clamp(-self.limit, self.limit)
        return gate * torch.sigmoid(gate * self.alpha) * (up + 1)


class MLP(nn.Module):
    """Plain (GPT-2) or gated (SwiGLU / GeGLU) MLP. For gated MLPs `hook_pre` is the gate branch
    and `hook_pre_linear` the linear branch (both before any clamping), as in TransformerLens."""

    def __init__(self, cfg: ModelConfig, d_mlp: int | None = None):
        super().__init__()
        d_mlp = d_mlp or cfg.d_mlp
        self.gated = cfg.gated_mlp
        self.act = activation(cfg.act_fn)
        self.glu = GatedActivation(cfg)
        if self.gated:
            self.gate_proj = Linear(cfg.d_model, d_mlp, bias=cfg.mlp_bias)
            self.hook_pre_linear = HookPoint()
        self.up_proj = Linear(cfg.d_model, d_mlp, bias=cfg.mlp_bias)
        self.down_proj = Linear(d_mlp, cfg.d_model, bias=cfg.mlp_bias)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    # TransformerLens-shaped views: W_in/W_gate [d_model, d_mlp], W_out [d_mlp, d_model].
    @property
    def W_in(self) -> torch.Tensor:
        return effective_weight(self.up_proj).T

    @property
    def W_gate(self) -> torch.Tensor | None:
        return effective_weight(self.gate_proj).T if self.gated else None

    @property
    def W_out(self) -> torch.Tensor:
        return effective_weight(self.down_proj).T

    @property
    def b_in(self) -> torch.Tensor:
        bias = self.up_proj.bias
        return bias if bias is not None else self.up_proj.weight.new_zeros(self.up_proj.out_features)

    @property
    def b_gate(self) -> torch.Tensor | None:
        if not self.gated:
            return None
        bias = self.gate_proj.bias
        return bias if bias is not None else self.gate_proj.weight.new_zeros(self.gate_proj.out_features)

    @property
    def b_out(self) -> torch.Tensor:
        bias = self.down_proj.bias
        return bias if bias is not None else self.down_proj.weight.new_zeros(self.down_proj.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate = self.hook_pre(self.gate_proj(x))
            post = self.hook_post(self.glu(gate, self.hook_pre_linear(self.up_proj(x))))
        else:
            post = self.hook_post(self.act(self.hook_pre(self.up_proj(x))))
        return self.down_proj(post)
