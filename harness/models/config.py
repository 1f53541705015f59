"""ModelConfig: one dataclass that describes every family.

Fields select components by name (``norm="rmsnorm"``, ``act_fn="silu"``) instead of there being a
class per model; a family file only says how its Hugging Face config maps onto these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError

NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu_new", "gelu", "gelu_pytorch_tanh", "silu", "relu")
POSITIONALS = ("learned", "rotary")
LAYER_TYPES = ("full", "sliding")


@dataclass
class ModelConfig:
    family: str
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_kv_heads: int | None = None  # None: same as n_heads (plain multi-head attention)

    # Normalisation. Gemma scales by (1 + w); `norm_offset` is that 1.
    norm: str = "rmsnorm"
    norm_eps: float = 1e-6
    norm_offset: float = 0.0
    post_attn_norm: bool = False  # Gemma's "sandwich" norms after attention and MLP
    post_mlp_norm: bool = False
    qk_norm: bool = False  # Qwen3 / Gemma 3 RMSNorm on each head's q and k

    # Positions.
    positional: str = "rotary"
    rope_theta: float = 10_000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "llama3"|"linear"|"yarn", ...}
    rope_theta_sliding: float | None = None  # Gemma 3: local layers use their own base
    rope_scaling_sliding: dict[str, Any] | None = None
    rotary_dim: int | None = None  # partial rotary; None means the whole head

    # Attention.
    layer_types: list[str] | None = None  # per layer "full" or "sliding"; None means all full
    sliding_window: int | None = None
    attn_scale: float | None = None  # None: 1/sqrt(d_head)
    attn_softcap: float | None = None
    attn_bias: bool = False  # bias on q, k, v
    attn_out_bias: bool = False  # bias on the output projection

    # MLP.
    act_fn: str = "silu"
    gated_mlp: bool = True
    mlp_bias: bool = False

    # Embedding and unembedding.
    tie_embeddings: bool = False
    embed_scale: float | None = None  # Gemma multiplies embeddings by sqrt(d_model)
    final_softcap: float | None = None

    # Tokens.
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.layer_types is None:
            self.layer_types = ["full"] * self.n_layers
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"invalid {self.family} config: {message}")

        need(self.norm in NORMS, f"norm={self.norm!r}; expected one of {NORMS}")
        need(self.act_fn in ACTIVATIONS, f"act_fn={self.act_fn!r}; expected one of {ACTIVATIONS}")
        need(self.positional in POSITIONALS, f"positional={self.positional!r}; expected {POSITIONALS}")
        for n in ("d_model", "n_layers", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx"):
            need(getattr(self, n) > 0, f"{n} must be positive, got {getattr(self, n)}")
        need(
            self.n_heads % self.n_kv_heads == 0,
            f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}",
        )
        need(
            len(self.layer_types) == self.n_layers,
            f"{len(self.layer_types)} layer_types for {self.n_layers} layers",
        )
        bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
        need(not bad, f"unknown layer types {bad}; expected {LAYER_TYPES}")
        if "sliding" in self.layer_types:
            need(bool(self.sliding_window), "sliding layers need a positive sliding_window")
        if self.rotary_dim is not None:
            need(
                0 < self.rotary_dim <= self.d_head and self.rotary_dim % 2 == 0,
                f"rotary_dim={self.rotary_dim} must be even and at most d_head={self.d_head}",
            )

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (1 for multi-head attention)."""
        return self.n_heads // self.n_kv_heads

    # TransformerLens names, so ActivationCache and TL-style analysis code read our config.
    @property
    def n_key_value_heads(self) -> int:
        return self.n_kv_heads

    @property
    def default_prepend_bos(self) -> bool:
        return self.bos_token_id is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)
