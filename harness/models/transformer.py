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

from harness.errors import HookNameError, ShapeError
from harness.models.components import MLP, Attention, AttentionMask, LayerKV, Norm, Rotary
from harness.models.config import ModelConfig
from harness.models.linear import Linear
from harness.models.mla import LatentAttention
from harness.models.moe import MoE


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.ln1 = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        self.attn = self.build_attn(cfg, layer)
        if cfg.post_attn_norm:
            self.ln1_post = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        self.ln2 = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        self.mlp = self.build_mlp(cfg, layer)
        if cfg.post_mlp_norm:
            self.ln2_post = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_offset)
        self.layer_type = cfg.layer_types[layer]
        for name in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
            setattr(self, f"hook_{name}", HookPoint())

    def build_attn(self, cfg: ModelConfig, layer: int) -> nn.Module:
        return LatentAttention(cfg, layer) if cfg.kv_lora_rank is not None else Attention(cfg, layer)

    def build_mlp(self, cfg: ModelConfig, layer: int) -> nn.Module:
        return MoE(cfg, layer) if cfg.is_moe_layer(layer) else MLP(cfg)

    def forward(self, resid, rope, mask: AttentionMask, kv: LayerKV | None, kv_capacity: int):
        resid = self.hook_resid_pre(resid)
        attn_out = self.attn(self.ln1(resid), rope, mask, kv, kv_capacity)
        if hasattr(self, "ln1_post"):
            attn_out = self.ln1_post(attn_out)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(attn_out))
        mlp_out = self.mlp(self.ln2(resid))
        if hasattr(self, "ln2_post"):
            mlp_out = self.ln2_post(mlp_out)
        return self.hook_resid_post(resid + self.hook_mlp_out(mlp_out))


class KVCache:
    """Keys and values of every layer plus the attention mask of what has been seen so far."""

    def __init__(self, n_layers: int, capacity: int = 0):
        self.layers = [LayerKV() for _ in range(n_layers)]
        self.capacity = capacity
        self.attention_mask: torch.Tensor | None = None  # [batch, seen] of 0/1

    @property
    def length(self) -> int:
        return self.layers[0].length


class HookedLM(HookedRootModule):
    def __init__(self, cfg: ModelConfig, tokenizer: Any = None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.identity: dict[str, Any] = {"name": cfg.name, "family": cfg.family}
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()
        if cfg.positional == "learned":
            self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
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
        self.unembed = Linear(cfg.d_model, cfg.d_vocab, bias=False)
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight
        self.setup()

    def build_block(self, cfg: ModelConfig, layer: int) -> nn.Module:
        return Block(cfg, layer)

    # ------------------------------------------------------------------ TransformerLens-style views
    @property
    def W_E(self) -> torch.Tensor:
        return self.embed.weight

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.weight.T

    @property
    def W_pos(self) -> torch.Tensor:
        return self.pos_embed.weight

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

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
        stop = self.cfg.n_layers if stop_at_layer is None else stop_at_layer
        capacity = past_kv_cache.capacity if past_kv_cache is not None else 0
        for i in range(start_at_layer, stop):
            block = self.blocks[i]
            kind = block.layer_type
            kv = past_kv_cache.layers[i] if past_kv_cache is not None else None
            resid = block(resid, ropes.get(kind), masks[kind], kv, capacity)
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
            cache = ActivationCache(cache, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))
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
            raise ValueError("this model has no tokenizer; pass token ids, or load it with tokenizer=")
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
        """Tokenise text. prepend_bos=None follows the tokenizer's own convention (what the model
        was trained with); True/False force a BOS token on or off. Batches are padded on
        `padding_side` (default right; pass "left" for generation)."""
        tok = self._need_tokenizer()
        texts = [input] if isinstance(input, str) else list(input)
        ids = [tok.encode(t, add_special_tokens=prepend_bos is None) for t in texts]
        bos = tok.bos_token_id
        if prepend_bos and bos is not None:
            ids = [[bos] + x for x in ids]
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

    def to_str_tokens(self, input: str | torch.Tensor, prepend_bos: bool | None = None) -> list[str]:
        tokens = self.to_tokens(input, prepend_bos=prepend_bos)[0] if isinstance(input, str) else input
        return [self.tokenizer.decode([t]) for t in tokens.flatten().tolist()]

    def generate(self, *args, **kwargs):
        from harness.models.generate import generate

        return generate(self, *args, **kwargs)
