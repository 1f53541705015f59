"""HookedLM: embed -> blocks -> final norm -> unembed, every intermediate a named hook point.

Built on TransformerLens's `HookedRootModule`, so `run_with_cache`, `run_with_hooks`, `hooks()`
and `names_filter` behave exactly as they do there.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.HookedRootModule import HookedRootModule
from transformer_lens.hook_points import HookPoint

from harness.errors import HarnessError, HookNameError, ShapeError, UnsupportedArchitectureError
from harness.models import processing
from harness.models.components import MLP, AttentionMask, FactoredViews, MixerInputs, Norm, Rotary
from harness.models.config import ModelConfig
from harness.models.kv_cache import KVCache
from harness.models.linear import Linear
from harness.models.mixers import build_mixer
from harness.models.moe import MoE
from harness.models.sae_hooks import SAEHooksMixin


class Block(nn.Module):
    """One layer: its token mixer (`attn`, whatever kind cfg.mixers names) and its MLP, each with
    the norms the config asks for: before (ln1, ln2) and after (ln1_post, ln2_post)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.mixer, self.layer_type = cfg.mixers[layer], cfg.layer_types[layer]
        self.pre_norm = cfg.pre_norm
        if cfg.pre_norm:
            self.ln1 = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        self.attn = self.build_mixer(cfg, layer)
        if cfg.post_attn_norm:
            self.ln1_post = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        if cfg.pre_norm:
            self.ln2 = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        self.mlp = self.build_mlp(cfg, layer)
        if cfg.post_mlp_norm:
            self.ln2_post = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        for name in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
            setattr(self, f"hook_{name}", HookPoint())

    def build_mixer(self, cfg: ModelConfig, layer: int) -> nn.Module:
        return build_mixer(cfg, layer)

    def build_mlp(self, cfg: ModelConfig, layer: int) -> nn.Module:
        return MoE(cfg, layer) if cfg.is_moe_layer(layer) else MLP(cfg)

    def forward(self, resid: torch.Tensor, inputs: MixerInputs) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        attn_out = self.attn(self.ln1(resid) if self.pre_norm else resid, inputs)
        if hasattr(self, "ln1_post"):
            attn_out = self.ln1_post(attn_out)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(attn_out))
        mlp_out = self.mlp(self.ln2(resid) if self.pre_norm else resid)
        if hasattr(self, "ln2_post"):
            mlp_out = self.ln2_post(mlp_out)
        return self.hook_resid_post(resid + self.hook_mlp_out(mlp_out))


class Embed(nn.Embedding):
    """nn.Embedding (state dict `embed.weight`) that also answers to TransformerLens's `W_E`."""

    @property
    def W_E(self) -> torch.Tensor:
        return self.weight


class PosEmbed(nn.Embedding):
    """Learned positions; TransformerLens's `W_pos`."""

    @property
    def W_pos(self) -> torch.Tensor:
        return self.weight


class Unembed(Linear):
    """The unembedding (state dict `unembed.weight`, [d_vocab, d_model]) with TransformerLens's
    views: `W_U` [d_model, d_vocab] and `b_U` [d_vocab] (zeros where the model has no bias)."""

    @property
    def W_U(self) -> torch.Tensor:
        return self.weight.T

    @property
    def b_U(self) -> torch.Tensor:
        return self.bias if self.bias is not None else self.weight.new_zeros(self.out_features)


class HookedCache(ActivationCache):
    """TransformerLens's ActivationCache, refusing by name what a mixture-of-experts layer cannot
    give it (one MLP's neurons), or a mixer without heads (per-head results), instead of failing
    on a missing hook."""

    def _heads_only(self, what: str, layer: int | None) -> None:
        cfg = self.model.cfg
        headless = cfg.headless_layers(None if layer is None or layer < 0 else layer)
        if headless:
            raise UnsupportedArchitectureError(
                f"{what}: layers {headless} are {cfg.mixers[headless[0]]} mixers, without attention heads to "
                "split; use each layer's hook_attn_out (decompose_resid) instead"
            )

    def stack_head_results(self, layer: int = -1, *args, **kwargs):
        self._heads_only("stack_head_results", layer)
        return super().stack_head_results(layer, *args, **kwargs)

    def _dense_mlps_only(self, what: str, layer: int | None) -> None:
        cfg = self.model.cfg
        upto = cfg.n_layers if layer is None or layer < 0 else layer
        moe = [i for i in range(upto) if cfg.is_moe_layer(i)]
        if moe:
            raise UnsupportedArchitectureError(
                f"{what}: layers {moe} are mixtures of experts, with no single MLP's neurons to decompose; "
                "use expand_neurons=False (each layer's mlp_out) or the per-expert hooks"
            )

    def stack_neuron_results(self, layer: int, *args, **kwargs):
        self._dense_mlps_only("stack_neuron_results", layer)
        return super().stack_neuron_results(layer, *args, **kwargs)

    def get_full_resid_decomposition(self, layer: int | None = None, mlp_input: bool = False,
                                     expand_neurons: bool = True, *args, **kwargs):
        if expand_neurons:
            self._dense_mlps_only("get_full_resid_decomposition(expand_neurons=True)", layer)
        self._heads_only("get_full_resid_decomposition", layer)
        return super().get_full_resid_decomposition(layer, mlp_input, expand_neurons, *args, **kwargs)


class HookedLM(FactoredViews, SAEHooksMixin, HookedRootModule):
    def __init__(self, cfg: ModelConfig, tokenizer: Any = None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.identity: dict[str, Any] = {"name": cfg.name, "family": cfg.family}
        self.embed = Embed(cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()
        if cfg.positional == "learned":
            self.pos_embed = PosEmbed(cfg.n_ctx, cfg.d_model)
            self.hook_pos_embed = HookPoint()
        else:
            rot_dim = cfg.rotary_dim or cfg.d_head
            self.rotary = nn.ModuleDict({"full": Rotary(rot_dim, cfg.rope_theta, cfg.rope_scaling)})
            if "sliding" in cfg.layer_types:
                theta = cfg.rope_theta_sliding or cfg.rope_theta
                scaling = cfg.rope_scaling_sliding if cfg.rope_theta_sliding else cfg.rope_scaling
                self.rotary["sliding"] = Rotary(rot_dim, theta, scaling)
        self.blocks = nn.ModuleList([self.build_block(cfg, i) for i in range(cfg.n_layers)])
        self.ln_final = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        self.unembed = Unembed(cfg.d_model, cfg.d_vocab, bias=False)
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight
        self.setup()

    def build_block(self, cfg: ModelConfig, layer: int) -> nn.Module:
        return Block(cfg, layer)

    # ------------------------------------------------------------------ TransformerLens-style views
    # The weights under HookedTransformer's names and shapes; per-layer ones stacked over layers.
    @property
    def W_E(self) -> torch.Tensor:
        return self.embed.weight

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.W_U

    @property
    def b_U(self) -> torch.Tensor:
        return self.unembed.b_U

    @property
    def W_pos(self) -> torch.Tensor:
        if self.cfg.positional != "learned":
            raise UnsupportedArchitectureError(
                f"W_pos: this {self.cfg.family} model uses rotary positions, which have no embedding matrix"
            )
        return self.pos_embed.weight

    @property
    def W_E_pos(self) -> torch.Tensor:
        return torch.cat([self.W_E, self.W_pos], dim=0)

    def _stacked(self, part: str, name: str) -> torch.Tensor:
        if part == "attn":
            headless = self.cfg.headless_layers()
            if headless:
                raise UnsupportedArchitectureError(
                    f"{name}: layers {headless} are {self.cfg.mixers[headless[0]]} mixers, without attention heads; "
                    f"read blocks[i].attn.{name} of the layers that have them"
                )
        return torch.stack([getattr(getattr(block, part), name) for block in self.blocks], dim=0)

    W_Q = property(lambda self: self._stacked("attn", "W_Q"))
    W_K = property(lambda self: self._stacked("attn", "W_K"))
    W_V = property(lambda self: self._stacked("attn", "W_V"))
    W_O = property(lambda self: self._stacked("attn", "W_O"))
    b_Q = property(lambda self: self._stacked("attn", "b_Q"))
    b_K = property(lambda self: self._stacked("attn", "b_K"))
    b_V = property(lambda self: self._stacked("attn", "b_V"))
    b_O = property(lambda self: self._stacked("attn", "b_O"))
    W_in = property(lambda self: self._stacked("mlp", "W_in"))
    W_out = property(lambda self: self._stacked("mlp", "W_out"))
    b_in = property(lambda self: self._stacked("mlp", "b_in"))
    b_out = property(lambda self: self._stacked("mlp", "b_out"))

    @property
    def W_gate(self) -> torch.Tensor | None:
        return self._stacked("mlp", "W_gate") if self.cfg.gated_mlp else None

    def all_head_labels(self) -> list[str]:
        return [f"L{layer}H{head}" for layer in range(self.cfg.n_layers) for head in range(self.cfg.n_heads)]

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> torch.Tensor:
        """The sum of the output biases (b_O, and b_out unless include_mlp_biases=False) of the layers
        before `layer`, plus layer's own b_O when mlp_input: the constant part of that residual stream."""
        if not 0 <= layer <= self.cfg.n_layers or (mlp_input and layer == self.cfg.n_layers):
            raise ShapeError(f"accumulated_bias: layer {layer} is outside 0..{self.cfg.n_layers - int(mlp_input)}")
        total = torch.zeros(self.cfg.d_model, device=self.device, dtype=self.dtype)
        for i in range(layer):
            total = total + self._mixer_out_bias(i)
            if include_mlp_biases:
                total = total + self.blocks[i].mlp.b_out
        if mlp_input:
            total = total + self._mixer_out_bias(layer)
        return total

    def _mixer_out_bias(self, layer: int) -> torch.Tensor:
        # A mixer without TransformerLens's b_O view (one without heads) adds no constant.
        bias = getattr(self.blocks[layer].attn, "b_O", None)
        return bias if bias is not None else torch.zeros(self.cfg.d_model, device=self.device, dtype=self.dtype)

    def tokens_to_residual_directions(self, tokens: str | int | torch.Tensor) -> torch.Tensor:
        """The unembedding column of each token: [d_model], or [..., d_model] for a tensor of them."""
        if isinstance(tokens, torch.Tensor) and tokens.numel() > 1:
            return self.W_U[:, tokens].movedim(0, -1)
        if isinstance(tokens, str):
            token = self.to_single_token(tokens)
        elif isinstance(tokens, torch.Tensor):
            token = int(tokens.item())
        elif isinstance(tokens, int):
            token = tokens
        else:
            raise HarnessError(f"tokens_to_residual_directions takes a string, an int or a tensor; got {type(tokens).__name__}")
        return self.W_U[:, token]

    def loss_fn(self, logits, tokens, attention_mask=None, per_token: bool = False) -> torch.Tensor:
        """TransformerLens's next-token cross-entropy (its `lm_cross_entropy_loss`)."""
        from transformer_lens.utils import lm_cross_entropy_loss

        return lm_cross_entropy_loss(logits, tokens.to(logits.device), attention_mask, per_token)

    # TransformerLens's switches. hook_result is always available here (it is computed only when
    # something hooks it), and q/k/v inputs are not split, so these only record the request.
    def set_use_attn_result(self, use_attn_result: bool) -> None:
        self.cfg.use_attn_result = use_attn_result

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        if use_split_qkv_input:
            raise UnsupportedArchitectureError(
                "split q/k/v inputs (hook_q_input/hook_k_input/hook_v_input) are not implemented; "
                "patch ln1.hook_normalized or hook_q/hook_k/hook_v instead"
            )
        self.cfg.use_split_qkv_input = False

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        if use_hook_mlp_in:
            raise UnsupportedArchitectureError("hook_mlp_in is not implemented; use blocks.{i}.ln2.hook_normalized")
        self.cfg.use_hook_mlp_in = False

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        if use_attn_in:
            raise UnsupportedArchitectureError("hook_attn_in is not implemented; use blocks.{i}.ln1.hook_normalized")
        self.cfg.use_attn_in = False

    # ------------------------------------------------------------------ weight processing
    def fold_layer_norm(self, fold_biases: bool | None = None, center_weights: bool | None = None) -> None:
        processing.fold_layer_norm(self, fold_biases, center_weights)
        self.setup()

    def center_writing_weights(self) -> None:
        processing.center_writing_weights(self)

    def center_unembed(self) -> None:
        processing.center_unembed(self)

    def fold_value_biases(self) -> None:
        processing.fold_value_biases(self)

    def process_weights_(self, fold_ln: bool = True, center_writing_weights: bool = True, center_unembed: bool = True,
                         refactor_factored_attn_matrices: bool = False, fold_value_biases: bool = True) -> "HookedLM":
        """TransformerLens's weight processing, in place (see harness.models.processing)."""
        return processing.process_weights_(self, fold_ln, center_writing_weights, center_unembed,
                                           fold_value_biases, refactor_factored_attn_matrices)

    @classmethod
    def from_pretrained(
        cls,
        model_name: Any,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        refactor_factored_attn_matrices: bool = False,
        device: str | torch.device | None = None,
        tokenizer: Any = None,
        fold_value_biases: bool = True,
        default_prepend_bos: bool | None = None,
        dtype: torch.dtype | str = torch.float32,
        hf_model: Any = None,
        **unused: Any,
    ) -> "HookedLM":
        """TransformerLens's `HookedTransformer.from_pretrained`, with its defaults: the model
        `harness.load` gives, then processed (fold_ln, centring, value-bias folding), so the
        analysis numbers match a TransformerLens notebook. `harness.load` gives the unprocessed
        model, whose activations equal transformers'. `hf_model` loads an in-memory transformers
        model instead of `model_name`, as TransformerLens allows."""
        import harness  # the package's loader: the model module itself never imports harness.loading

        ignored = {"n_devices", "move_to_device", "default_padding_side", "checkpoint_index", "checkpoint_value"}
        unknown = sorted(set(unused) - ignored)
        if unknown:
            raise HarnessError(f"from_pretrained: unsupported arguments {unknown}")
        if isinstance(dtype, str):
            names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                     "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
            if dtype not in names:
                raise HarnessError(f"from_pretrained: unknown dtype {dtype!r}; use one of {sorted(names)}")
            dtype = names[dtype]
        model = harness.load(hf_model if hf_model is not None else model_name, device=device or "cpu", dtype=torch.float32,
                             tokenizer=tokenizer)
        model.process_weights_(fold_ln=fold_ln, center_writing_weights=center_writing_weights,
                               center_unembed=center_unembed, fold_value_biases=fold_value_biases,
                               refactor_factored_attn_matrices=refactor_factored_attn_matrices)
        if default_prepend_bos is not None:
            model.cfg.default_prepend_bos = default_prepend_bos
        return model.to(dtype)  # processed in float32, as TransformerLens does, then cast

    @classmethod
    def from_pretrained_no_processing(cls, model_name: Any, **kwargs: Any) -> "HookedLM":
        for flag in ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"):
            kwargs.setdefault(flag, False)
        return cls.from_pretrained(model_name, **kwargs)

    # ------------------------------------------------------------------ device, dtype, tokenizer
    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def _apply(self, fn, *args, **kwargs):
        # .to/.cuda/.half all come through here: keep cfg.device/cfg.dtype (read by
        # TransformerLens's utilities) in step with the weights.
        out = super()._apply(fn, *args, **kwargs)
        self.cfg.device, self.cfg.dtype = self.embed.weight.device, self.embed.weight.dtype
        return out

    @property
    def tokenizer(self) -> Any:
        return self.__dict__.get("_tokenizer")

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self.__dict__["_tokenizer"] = tokenizer
        # TransformerLens's test for a tokenizer that adds BOS by itself.
        self.cfg.tokenizer_prepends_bos = None if tokenizer is None else len(tokenizer.encode("")) > 0

    def set_tokenizer(self, tokenizer: Any, default_padding_side: str | None = None) -> None:
        self.tokenizer = tokenizer
        if default_padding_side is not None:
            tokenizer.padding_side = default_padding_side

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input: torch.Tensor | str | list[str],
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        start_at_layer: int | None = None,
        tokens: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
        past_kv_cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        **ignored: Any,
    ):
        """Run the model. `input` is token ids [batch, pos], text, or (with start_at_layer) the
        residual stream [batch, pos, d_model]. With stop_at_layer=L it returns the residual stream
        entering block L; otherwise logits, loss or both according to `return_type`."""
        if isinstance(input, (str, list)):
            input, attention_mask = self.to_tokens(
                input, prepend_bos=prepend_bos, padding_side=padding_side, return_mask=True
            )
        if start_at_layer is None:
            if input.dim() == 1:
                input = input[None]
            if input.dim() != 2:
                raise ShapeError(f"tokens must be [batch, pos]; got shape {tuple(input.shape)}")
            tokens = input
        batch, pos = input.shape[:2]
        past = past_kv_cache.length if past_kv_cache is not None else 0
        if past + pos > self.cfg.n_ctx and self.cfg.positional == "learned":
            raise ShapeError(f"{past + pos} positions exceed the model's context of {self.cfg.n_ctx}")

        attention_mask = self._full_attention_mask(attention_mask, past_kv_cache, batch, pos)
        if position_ids is None:
            position_ids = self._positions(attention_mask, past, pos, input.device)

        if start_at_layer is None:
            resid = self.hook_embed(self._embed(tokens))
            if self.cfg.positional == "learned":
                resid = resid + self.hook_pos_embed(self.pos_embed(position_ids).expand(batch, -1, -1))
            start_at_layer = 0
        else:
            resid = input

        ropes = self._ropes(position_ids, resid.dtype)
        masks = self._masks(attention_mask, past, pos, batch, resid.device)
        padded = attention_mask is not None and not bool(attention_mask.all())
        padding = attention_mask[:, past : past + pos].to(resid.device) if padded else None
        stop = self.cfg.n_layers if stop_at_layer is None else stop_at_layer
        with self._sae_token_masks(tokens):
            for i in range(start_at_layer, stop):
                block = self.blocks[i]
                kind = block.layer_type
                state = past_kv_cache.state(i, block.attn.new_state) if past_kv_cache is not None else None
                resid = block(resid, MixerInputs(ropes.get(kind), masks[kind], padding, state))
        if past_kv_cache is not None:
            past_kv_cache.length = past + pos
        if stop_at_layer is not None:
            return resid

        logits = self.unembed_residual(resid)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = self.loss(logits, tokens, attention_mask, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        if self.cfg.embed_scale is not None:
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)
        return x

    def unembed_residual(self, resid: torch.Tensor) -> torch.Tensor:
        """Final norm, unembedding and (where configured) logit soft-capping."""
        logits = self.unembed(self.ln_final(resid))
        if self.cfg.final_softcap is not None:
            logits = torch.tanh(logits / self.cfg.final_softcap) * self.cfg.final_softcap
        return logits

    @staticmethod
    def loss(logits, tokens, attention_mask=None, per_token: bool = False) -> torch.Tensor:
        """Next-token cross-entropy, ignoring padded targets."""
        log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
        if per_token:
            return nll
        if attention_mask is None:
            return nll.mean()
        keep = attention_mask[:, -tokens.shape[1] + 1 :].to(nll.dtype)
        return (nll * keep).sum() / keep.sum()

    def _full_attention_mask(self, attention_mask, cache: KVCache | None, batch: int, pos: int):
        """The 0/1 mask over every position seen so far (cache + this call), or None if all real."""
        if cache is None:
            return attention_mask
        if attention_mask is not None and attention_mask.shape[1] == cache.length + pos:
            full = attention_mask  # the caller already passed the whole history
        else:
            new = attention_mask if attention_mask is not None else torch.ones(batch, pos, dtype=torch.long)
            old = cache.attention_mask
            if old is None and cache.length:
                old = torch.ones(batch, cache.length, dtype=new.dtype)
            full = new if old is None else torch.cat([old.to(new.device), new.to(old.device)], dim=1)
        cache.attention_mask = full
        return full

    def _positions(self, attention_mask, past: int, pos: int, device) -> torch.Tensor:
        if attention_mask is None:
            return torch.arange(past, past + pos, device=device)[None]
        # Left padding: real tokens count from zero, as Hugging Face does.
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return positions[:, past : past + pos].to(device)

    def _ropes(self, position_ids, dtype):
        if self.cfg.positional != "rotary":
            return {}
        return {kind: rotary(position_ids, dtype) for kind, rotary in self.rotary.items()}

    def _masks(self, attention_mask, past: int, pos: int, batch: int, device) -> dict[str, AttentionMask]:
        total = past + pos
        padded = attention_mask is not None and not bool(attention_mask.all())
        masks = {}
        for kind in set(self.cfg.layer_types):
            window = self.cfg.sliding_window if kind == "sliding" else None
            windowed = window is not None and total > window
            if not padded and not windowed and (past == 0 or pos == 1):
                # One new token sees everything; a fresh sequence is plain causal. (SDPA's
                # is_causal aligns top-left, so a chunk after a cache needs the explicit mask.)
                masks[kind] = AttentionMask(None, is_causal=pos > 1)
                continue
            q_idx = torch.arange(past, total, device=device)[:, None]
            k_idx = torch.arange(total, device=device)[None, :]
            allowed = k_idx <= q_idx
            if windowed:
                allowed = allowed & (k_idx > q_idx - window)
            allowed = allowed[None, None].expand(batch, 1, pos, total)
            if padded:
                allowed = allowed & attention_mask.bool().to(device)[:, None, None, :]
                # A padding query with nothing to see would give NaN; let it see itself.
                allowed = allowed | (q_idx == k_idx)[None, None]
            masks[kind] = AttentionMask(allowed, is_causal=False)
        return masks

    # ------------------------------------------------------------------ caching and hooks
    def run_with_cache(self, *model_args, return_cache_object: bool = True, **kwargs):
        names_filter = kwargs.get("names_filter")
        if names_filter is not None:
            self.check_hook_names(names_filter)
        out, cache = super().run_with_cache(*model_args, **kwargs)
        if return_cache_object:
            cache = HookedCache(cache, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))
        return out, cache

    def check_hook_names(self, names: str | Iterable[str] | Any) -> None:
        """Raise HookNameError, suggesting the nearest names, for any name the model lacks."""
        if callable(names):
            return
        for name in [names] if isinstance(names, str) else list(names):
            if callable(name) or name in self.hook_dict:
                continue
            if any(ch in name for ch in "*?[") and fnmatch.filter(self.hook_dict, name):
                continue
            close = difflib.get_close_matches(name, list(self.hook_dict), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "see model.hook_dict for the names"
            raise HookNameError(f"unknown hook {name!r}; {hint}")

    def check_hooks_to_add(self, hook_point, hook_point_name, hook, dir="fwd", is_permanent=False, prepend=False):
        # Called by TransformerLens for every hook added by name.
        if hook_point_name not in self.hook_dict:
            self.check_hook_names([hook_point_name])

    def run_with_hooks(self, *model_args, fwd_hooks=(), bwd_hooks=(), **kwargs):
        self.check_hook_names([n for n, _ in list(fwd_hooks) + list(bwd_hooks) if isinstance(n, str)])
        return super().run_with_hooks(*model_args, fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks, **kwargs)

    # ------------------------------------------------------------------ tokenisation
    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise HarnessError("this model has no tokenizer; pass token ids, or load it with tokenizer=")
        return self.tokenizer

    def to_tokens(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
        return_mask: bool = False,
    ):
        """Tokenise text as TransformerLens does: prepend_bos=None means `cfg.default_prepend_bos`
        (True unless changed), so the tokens start with BOS (the EOS token where the tokenizer has
        no BOS), whether or not the tokenizer adds one itself; True/False force it on or off.
        `prepend_bos=model.cfg.tokenizer_prepends_bos` gives the tokenizer's own convention (what
        transformers feeds the model). Batches are padded on `padding_side` (default right; pass
        "left" for generation); return_mask=True also returns the 0/1 mask (None if unpadded)."""
        tok = self._need_tokenizer()
        texts = [input] if isinstance(input, str) else list(input)
        prepend = self.cfg.default_prepend_bos if prepend_bos is None else bool(prepend_bos)
        adds = bool(self.cfg.tokenizer_prepends_bos)
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ids = [tok.encode(t, add_special_tokens=True) for t in texts]
        if prepend and not adds:
            if bos is None:
                raise HarnessError("prepend_bos=True but the tokenizer has neither a BOS nor an EOS token")
            ids = [[bos] + x for x in ids]
        elif adds and not prepend:
            ids = [x[1:] if x and x[0] == tok.bos_token_id else x for x in ids]
        if truncate:
            ids = [x[: self.cfg.n_ctx] for x in ids]
        width = max(len(x) for x in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        side = padding_side or "right"
        tokens = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            span = slice(0, len(x)) if side == "right" else slice(width - len(x), width)
            tokens[row, span] = torch.tensor(x, dtype=torch.long)
            mask[row, span] = 1
        if move_to_device:
            tokens, mask = tokens.to(self.device), mask.to(self.device)
        return (tokens, (None if bool(mask.all()) else mask)) if return_mask else tokens

    def to_string(self, tokens: torch.Tensor | list[int]) -> str | list[str]:
        tok = self._need_tokenizer()
        if isinstance(tokens, torch.Tensor) and tokens.dim() == 2:
            return [tok.decode(row) for row in tokens.tolist()]
        return tok.decode(tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)

    def to_str_tokens(self, input: Any, prepend_bos: bool | None = None, padding_side: str | None = None):
        """Each token as its own string. Text follows to_tokens' BOS rule; a list gives a list per item."""
        tok = self._need_tokenizer()
        if isinstance(input, list) and not all(isinstance(x, int) for x in input):
            return [self.to_str_tokens(x, prepend_bos, padding_side) for x in input]
        if isinstance(input, str):
            tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)[0]
        else:
            tokens = torch.as_tensor(input)
        return [tok.decode([t], clean_up_tokenization_spaces=False) for t in tokens.flatten().tolist()]

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (no BOS); HarnessError otherwise."""
        tokens = self.to_tokens(string, prepend_bos=False)[0]
        if tokens.numel() != 1:
            raise HarnessError(f"{string!r} is {tokens.numel()} tokens, not one; use to_tokens")
        return int(tokens.item())

    def to_single_str_token(self, int_token: int) -> str:
        return self.to_str_tokens(torch.tensor([int_token]))[0]

    def get_token_position(self, single_token: str | int, input: str | torch.Tensor, mode: str = "first",
                           prepend_bos: bool | None = None, padding_side: str | None = None) -> int:
        """Where `single_token` first (or last) occurs in `input` (text follows to_tokens' BOS rule)."""
        tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side) if isinstance(input, str) else input
        if tokens.dim() == 2:
            if tokens.shape[0] != 1:
                raise ShapeError(f"get_token_position takes one sequence; got shape {tuple(tokens.shape)}")
            tokens = tokens[0]
        if isinstance(single_token, str):
            single_token = self.to_single_token(single_token)
        elif isinstance(single_token, torch.Tensor):
            single_token = int(single_token.item())
        where = (tokens == single_token).nonzero().flatten()
        if where.numel() == 0:
            raise HarnessError(f"token {single_token} does not occur in the input")
        if mode not in ("first", "last"):
            raise HarnessError(f"mode must be 'first' or 'last', not {mode!r}")
        return int(where[0 if mode == "first" else -1].item())

    def generate(self, *args, **kwargs):
        from harness.models.generate import generate

        return generate(self, *args, **kwargs)
