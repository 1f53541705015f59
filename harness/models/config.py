"""ModelConfig: one dataclass that describes every family.

Fields select components by name (``norm="rmsnorm"``, ``act_fn="silu"``) instead of there being a
class per model; a family file only says how its Hugging Face config maps onto these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.errors import ConfigError
from harness.models.mixers import check_mixer, mixer_spec

NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu_new", "gelu", "gelu_pytorch_tanh", "silu", "relu")
POSITIONALS = ("learned", "rotary")
LAYER_TYPES = ("full", "sliding")  # which positions an attention layer sees (and its rope)
QK_NORM_SCOPES = ("head", "projection")
ROUTER_SCORINGS = ("softmax", "sigmoid")
ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
    "gemma3": "Gemma3ForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM", "olmo2": "Olmo2ForCausalLM",
    "gpt_oss": "GptOssForCausalLM",
}


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
    pre_norm: bool = True  # a norm before each sublayer (ln1, ln2); OLMo 2 has none, only the post-norms
    post_attn_norm: bool = False  # norms on the sublayers' outputs: Gemma's "sandwich", OLMo 2's only ones
    post_mlp_norm: bool = False
    qk_norm: bool = False  # RMSNorm on queries and keys, over `qk_norm_scope`:
    qk_norm_scope: str = "head"  # "head": each head's (Qwen3, Gemma 3); "projection": all heads at once (OLMo 2)

    # Positions.
    positional: str = "rotary"
    rope_theta: float = 10_000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "llama3"|"linear"|"yarn", ...}
    rope_theta_sliding: float | None = None  # Gemma 3: local layers use their own base
    rope_scaling_sliding: dict[str, Any] | None = None
    rotary_dim: int | None = None  # partial rotary; None means the whole head

    # Token mixers: per layer, the name of a registered mixer (harness.models.mixers), e.g.
    # "attention" or "latent_attention". None: "latent_attention" everywhere when kv_lora_rank is
    # set, else "attention". A family states its layer pattern here and in layer_types.
    mixers: list[str] | None = None

    # Attention.
    layer_types: list[str] | None = None  # per layer "full" or "sliding"; None means all full
    sliding_window: int | None = None
    attn_scale: float | None = None  # None: 1/sqrt(d_head)
    attn_softcap: float | None = None
    attn_bias: bool = False  # bias on q, k, v
    attn_out_bias: bool = False  # bias on the output projection
    attn_sinks: bool = False  # GPT-OSS: a learned logit per head joins each softmax row, with no value
    # Multi-head latent attention (DeepSeek-V2/V3), selected by setting kv_lora_rank. Then d_head is
    # the query/key head size (no-rope part + rope part) and rotary_dim the decoupled rope part.
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None  # None: queries are projected directly, without a latent
    v_head_dim: int | None = None  # None: d_head
    rope_interleave: bool = False  # rotate pairs (x0, x1), (x2, x3)... instead of the two halves

    # MLP.
    act_fn: str = "silu"
    gated_mlp: bool = True
    mlp_bias: bool = False  # biases on the MLP's projections (and on each expert's)
    # GPT-OSS's clamped SwiGLU: gate clamped above at glu_limit, up to [-glu_limit, glu_limit], then
    # gate * sigmoid(glu_alpha * gate) * (up + 1). None: the plain act(gate) * up.
    glu_limit: float | None = None
    glu_alpha: float = 1.0
    # Mixture of experts; n_experts=0 means every MLP is dense.
    n_experts: int = 0
    experts_per_token: int = 0  # top-k
    d_expert: int | None = None  # each routed expert's hidden size; None: d_mlp
    moe_layers: list[int] | None = None  # layers whose MLP is a mixture; None: all of them
    router_scoring: str = "softmax"  # "softmax" (Mixtral, Qwen3-MoE) or "sigmoid" (DeepSeek-V3)
    router_norm_topk: bool = True  # rescale the chosen experts' weights to sum to 1
    router_bias: bool = False  # DeepSeek's e_score_correction_bias: moves the choice, not the weights
    router_logit_bias: bool = False  # GPT-OSS: a bias added to the router logits (it moves both)
    router_n_group: int = 1  # group-limited routing: experts split into n_group groups and
    router_topk_group: int = 1  # each token chooses only within its topk_group best groups
    routed_scaling: float = 1.0  # multiplies the chosen weights (DeepSeek's routed_scaling_factor)
    n_shared_experts: int = 0  # always-on experts of d_expert each, run as one MLP

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

    # TransformerLens's switches, under its names, so its utilities (and `LocallyOverridenDefaults`)
    # read and set them on our config as on its own.
    default_prepend_bos: bool = True  # to_tokens(text) starts with BOS unless told otherwise
    ln_folded: bool = False  # weight processing folded the norm weights into the next layer
    use_attn_result: bool = True  # hook_result is always available (computed only when hooked)
    use_split_qkv_input: bool = False
    use_hook_mlp_in: bool = False
    use_attn_in: bool = False

    # Runtime facts TransformerLens keeps on its config; HookedLM keeps them current (not fields,
    # so checkpoints never record them).
    device = torch.device("cpu")
    dtype = torch.float32
    tokenizer_prepends_bos = None  # set when the model gets a tokenizer: does encode("") give BOS?

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.layer_types is None:
            self.layer_types = ["full"] * self.n_layers
        if self.mixers is None:
            self.mixers = ["latent_attention" if self.kv_lora_rank is not None else "attention"] * self.n_layers
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
        self._validate_mixers(need)
        need(self.qk_norm_scope in QK_NORM_SCOPES, f"qk_norm_scope={self.qk_norm_scope!r}; expected {QK_NORM_SCOPES}")
        if self.glu_limit is not None:
            need(self.glu_limit > 0, f"glu_limit must be positive, got {self.glu_limit}")
            need(self.gated_mlp and self.act_fn == "silu",
                 "glu_limit is GPT-OSS's clamped SwiGLU; it needs gated_mlp and act_fn='silu'")
        if self.rotary_dim is not None:
            need(
                0 < self.rotary_dim <= self.d_head and self.rotary_dim % 2 == 0,
                f"rotary_dim={self.rotary_dim} must be even and at most d_head={self.d_head}",
            )
        self._validate_moe(need)
        self._validate_mla(need)

    def _validate_mixers(self, need) -> None:

        need(len(self.mixers) == self.n_layers, f"{len(self.mixers)} mixers for {self.n_layers} layers")
        for layer, name in enumerate(self.mixers):
            check_mixer(name, layer)
        latent = [i for i, name in enumerate(self.mixers) if name == "latent_attention"]
        if self.kv_lora_rank is None:
            need(not latent, f"layers {latent} are latent_attention but kv_lora_rank is not set")
        else:
            need(bool(latent), "kv_lora_rank is set but no layer's mixer is latent_attention")

    def _validate_moe(self, need) -> None:
        if self.n_experts == 0:
            need(
                not self.experts_per_token and not self.moe_layers and not self.n_shared_experts,
                "experts_per_token, moe_layers or n_shared_experts set but n_experts=0; set n_experts",
            )
            return
        e, k, groups, top_groups = self.n_experts, self.experts_per_token, self.router_n_group, self.router_topk_group
        need(e > 0, f"n_experts must be positive, got {e}")
        need(0 < k <= e, f"experts_per_token={k} must be between 1 and n_experts={e}")
        scoring = self.router_scoring
        need(scoring in ROUTER_SCORINGS, f"router_scoring={scoring!r}; expected {ROUTER_SCORINGS}")
        need(groups > 0 and e % groups == 0, f"router_n_group={groups} must divide n_experts={e}")
        need(0 < top_groups <= groups, f"router_topk_group={top_groups} must be between 1 and router_n_group={groups}")
        need(
            k <= top_groups * (e // groups),
            f"experts_per_token={k} exceeds the {top_groups * (e // groups)} experts in the "
            f"router_topk_group={top_groups} groups a token may use",
        )
        need(self.d_expert is None or self.d_expert > 0, f"d_expert must be positive, got {self.d_expert}")
        need(self.n_shared_experts >= 0, f"n_shared_experts must be >= 0, got {self.n_shared_experts}")
        bad = [i for i in self.moe_layers or [] if not 0 <= i < self.n_layers]
        need(not bad, f"moe_layers {bad} are outside 0..{self.n_layers - 1}")

    def _validate_mla(self, need) -> None:
        if self.kv_lora_rank is None:
            for name in ("q_lora_rank", "v_head_dim"):
                need(getattr(self, name) is None, f"{name} is set but kv_lora_rank is not; it is for latent attention")
            need(not self.rope_interleave, "rope_interleave is only implemented for latent attention; set kv_lora_rank")
            return
        need(self.kv_lora_rank > 0, f"kv_lora_rank must be positive, got {self.kv_lora_rank}")
        q_rank = self.q_lora_rank
        need(q_rank is None or q_rank > 0, f"q_lora_rank must be positive or None, got {q_rank}")
        need(self.rotary_dim is not None, "latent attention needs rotary_dim (the decoupled rope part of d_head)")
        need(self.n_kv_heads == self.n_heads, "latent attention expands keys for every head; set n_kv_heads=n_heads")
        need((self.v_head_dim or self.d_head) > 0, f"v_head_dim must be positive, got {self.v_head_dim}")

    def has_heads(self, layer: int) -> bool:
        """Whether the layer's mixer has attention heads (attn.hook_z, hook_pattern, per-head weights)."""
        return mixer_spec(self.mixers[layer]).heads

    def headless_layers(self, upto: int | None = None) -> list[int]:
        """The layers (below `upto`, default all) whose mixer has no attention heads."""
        return [i for i in range(self.n_layers if upto is None else upto) if not self.has_heads(i)]

    def is_moe_layer(self, layer: int) -> bool:
        return self.n_experts > 0 and (self.moe_layers is None or layer in self.moe_layers)

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (1 for multi-head attention)."""
        return self.n_heads // self.n_kv_heads

    # ---------------------------------------------------------------- TransformerLens's names
    # Read-only views under HookedTransformerConfig's names, so ActivationCache, patching,
    # head_detector and TL-style analysis code read our config as they read TransformerLens's.
    @property
    def n_key_value_heads(self) -> int | None:
        """None for plain multi-head attention, as TransformerLens has it (it tests `is not None`)."""
        return self.n_kv_heads if self.n_kv_heads != self.n_heads else None

    @property
    def normalization_type(self) -> str:
        """"LN" or "RMS"; "LNPre"/"RMSPre" once the norm weights have been folded away."""
        kind = "LN" if self.norm == "layernorm" else "RMS"
        return kind + "Pre" if self.ln_folded else kind

    @property
    def positional_embedding_type(self) -> str:
        return "standard" if self.positional == "learned" else "rotary"

    @property
    def eps(self) -> float:
        return self.norm_eps

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def attn_only(self) -> bool:
        return False

    @property
    def parallel_attn_mlp(self) -> bool:
        return False

    @property
    def final_rms(self) -> bool:
        return self.norm == "rmsnorm"

    @property
    def rmsnorm_uses_offset(self) -> bool:
        return bool(self.norm_offset)

    @property
    def num_experts(self) -> int | None:
        return self.n_experts or None

    @property
    def n_devices(self) -> int:
        return 1

    @property
    def rotary_base(self) -> float:
        return self.rope_theta

    @property
    def rotary_adjacent_pairs(self) -> bool:
        return self.rope_interleave

    @property
    def window_size(self) -> int | None:
        return self.sliding_window

    @property
    def attn_types(self) -> list[str] | None:
        return ["local" if t == "sliding" else "global" for t in self.layer_types] if "sliding" in self.layer_types else None

    @property
    def attn_scores_soft_cap(self) -> float:
        return self.attn_softcap if self.attn_softcap is not None else -1.0

    @property
    def output_logits_soft_cap(self) -> float:
        return self.final_softcap if self.final_softcap is not None else -1.0

    @property
    def ungroup_grouped_query_attention(self) -> bool:
        return False

    @property
    def model_name(self) -> str:
        return self.name or self.family

    @property
    def original_architecture(self) -> str:
        """The transformers class this family's checkpoints name in `architectures`."""
        return ARCHITECTURES.get(self.family, self.family)

    def is_layer_norm_activation(self) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)
