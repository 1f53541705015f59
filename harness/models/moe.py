"""Mixture-of-experts MLPs (Mixtral, Qwen3-MoE, DeepSeekMoE).

A router scores every expert for every token and keeps the top k. The (token, expert) pairs are
then grouped by expert with one stable sort, so each expert runs once on a contiguous slice (all
of them in one grouped matmul when no expert is hooked, except where a per-expert loop is
faster), and each token's k weighted outputs are summed. Hooks expose the routing and each
expert's input and output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from harness.models.components import MLP, GatedActivation, _has_hooks, unsupported
from harness.models.config import ModelConfig
from harness.models.linear import linear, takes_onednn


class Router(nn.Module):
    """Scores experts and picks k of them per token. The variants:
    - softmax over all experts, then top-k, optionally renormalised (Mixtral, Qwen3-MoE);
    - sigmoid scores, with a learned bias that only steers which experts are chosen (DeepSeek-V3's
      auxiliary-loss-free balancing), choice limited to the best groups of experts, the chosen
      weights renormalised and multiplied by a fixed scale;
    - a linear router with a bias, softmax over the top k logits (GPT-OSS): the same as softmax
      over all experts, then top-k renormalised, so it is that with `router_logit_bias`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_experts, cfg.d_model))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        if cfg.router_bias:
            self.register_buffer("bias", torch.zeros(cfg.n_experts))
        if cfg.router_logit_bias:
            self.logit_bias = nn.Parameter(torch.zeros(cfg.n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits [..., n_experts]."""
        if self.cfg.router_scoring == "sigmoid":
            return linear(x.float(), self.weight.float())  # DeepSeek routes in float32
        return linear(x, self.weight, getattr(self, "logit_bias", None))

    def select(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights, indices), each [..., k], from router logits; weights are float32."""
        cfg = self.cfg
        scores = logits.float().softmax(-1) if cfg.router_scoring == "softmax" else logits.float().sigmoid()
        choice = scores + self.bias.float() if cfg.router_bias else scores
        if cfg.router_n_group > 1:
            choice = self._best_groups_only(choice)
        indices = choice.topk(cfg.experts_per_token, dim=-1).indices
        weights = scores.gather(-1, indices)  # the bias never reaches the weights
        if cfg.router_norm_topk:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * cfg.routed_scaling, indices

    def _best_groups_only(self, choice: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        grouped = choice.unflatten(-1, (cfg.router_n_group, -1))
        # A group is as good as the sum of its two best experts (DeepSeek-V3).
        group_score = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(-1)
        best = group_score.topk(cfg.router_topk_group, dim=-1).indices
        keep = torch.zeros_like(group_score, dtype=torch.bool).scatter_(-1, best, True)
        return grouped.masked_fill(~keep[..., None], float("-inf")).flatten(-2)


class ExpertHooks(nn.Module):
    """Hook points for one expert's activations, on the [n_routed_tokens, ...] rows routed to it.
    `hook_out` is the expert's output before the router's weight is applied."""

    def __init__(self):
        super().__init__()
        for name in ("in", "pre", "pre_linear", "post", "out"):
            setattr(self, f"hook_{name}", HookPoint())

    @property
    def hooked(self) -> bool:
        hooks = (self.hook_in, self.hook_pre, self.hook_pre_linear, self.hook_post, self.hook_out)
        return any(_has_hooks(h) for h in hooks)


class Experts(nn.Module):
    """The routed experts: gated MLPs whose weights are stacked as transformers keeps them,
    `gate_up_proj` [experts, 2 * hidden, d_model] (gate rows first) and `down_proj`
    [experts, d_model, hidden], with `gate_up_bias` [experts, 2 * hidden] and `down_bias`
    [experts, d_model] where cfg.mlp_bias (GPT-OSS). Child `{e}` holds expert e's hooks
    (`experts.{e}.hook_in` ...).

    Input rows arrive grouped by expert. With no expert hook attached, one grouped matmul serves
    all experts; otherwise a loop runs each expert on its slice, so each can be hooked. The loop
    also serves float32 inference on CPU, where one oneDNN linear per expert
    (harness.models.linear) is faster than torch's CPU grouped matmul, which uses MKL's."""

    def __init__(self, cfg: ModelConfig, d_hidden: int):
        super().__init__()
        e, d = cfg.n_experts, cfg.d_model
        self.glu = GatedActivation(cfg)
        # nn.Linear's default init, per expert.
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * d_hidden, d).uniform_(-(d**-0.5), d**-0.5))
        self.down_proj = nn.Parameter(torch.empty(e, d, d_hidden).uniform_(-(d_hidden**-0.5), d_hidden**-0.5))
        if cfg.mlp_bias:
            self.gate_up_bias = nn.Parameter(torch.zeros(e, 2 * d_hidden))
            self.down_bias = nn.Parameter(torch.zeros(e, d))
        else:
            self.gate_up_bias = self.down_bias = None
        for i in range(e):
            self.add_module(str(i), ExpertHooks())
        self.grouped_ok = hasattr(F, "grouped_mm")

    def __getitem__(self, expert: int) -> ExpertHooks:
        return self._modules[str(expert)]

    def __len__(self) -> int:
        return self.gate_up_proj.shape[0]

    def forward(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """rows [n, d_model] grouped by expert, counts [experts] -> unweighted outputs [n, d_model]."""
        hooks = [self[i] for i in range(len(self))]
        grouped = self.grouped_ok and rows.shape[0] and not takes_onednn(rows, self.gate_up_proj)
        if grouped and not any(h.hooked for h in hooks):
            try:
                return self._grouped(rows, counts)
            except (RuntimeError, NotImplementedError):  # no kernel for this device or dtype
                self.grouped_ok = False
        return self._looped(rows, counts.tolist(), hooks)

    def _grouped(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        ends = counts.cumsum(0).to(torch.int32)
        gate_up = F.grouped_mm(rows, self.gate_up_proj.transpose(1, 2), offs=ends)
        if self.gate_up_bias is not None:
            owner = torch.repeat_interleave(torch.arange(len(counts), device=rows.device), counts.to(rows.device))
            gate_up = gate_up + self.gate_up_bias[owner]
        hidden = self.glu(*gate_up.chunk(2, dim=-1))
        out = F.grouped_mm(hidden, self.down_proj.transpose(1, 2), offs=ends)
        return out + self.down_bias[owner] if self.down_bias is not None else out

    @staticmethod
    def _bias(bias: torch.Tensor | None, expert: int) -> torch.Tensor | None:
        return None if bias is None else bias[expert]

    def _looped(self, rows: torch.Tensor, counts: list[int], hooks: list[ExpertHooks]) -> torch.Tensor:
        outs = []
        for e, (x, hook) in enumerate(zip(rows.split(counts), hooks)):
            if not counts[e] and not hook.hooked:
                continue  # an idle expert runs (on no rows) only if someone watches it
            gate, up = linear(hook.hook_in(x), self.gate_up_proj[e], self._bias(self.gate_up_bias, e)).chunk(2, dim=-1)
            post = hook.hook_post(self.glu(hook.hook_pre(gate), hook.hook_pre_linear(up)))
            outs.append(hook.hook_out(linear(post, self.down_proj[e], self._bias(self.down_bias, e))))
        return torch.cat(outs) if outs else rows.new_zeros(0, rows.shape[1])


class MoE(nn.Module):
    """The MLP of a mixture-of-experts layer: routed experts plus optional shared experts."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        d_expert = cfg.d_expert or cfg.d_mlp
        self.router = Router(cfg)
        self.experts = Experts(cfg, d_expert)
        if cfg.n_shared_experts:
            self.shared_experts = MLP(cfg, d_mlp=d_expert * cfg.n_shared_experts)
            self.hook_shared_out = HookPoint()
        self.hook_router_logits = HookPoint()  # [batch, pos, n_experts]
        self.hook_topk_indices = HookPoint()  # [batch, pos, k]
        self.hook_topk_weights = HookPoint()  # [batch, pos, k], float32

    W_in = W_gate = W_out = b_in = b_out = unsupported(lambda self: (
        f"layer {self.layer} is a mixture of experts: it has no single W_in/W_gate/W_out as TransformerLens "
        "expects; use mlp.experts (per-expert weights) and the hook_router_logits / hook_topk_* activations"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p, d = x.shape
        logits = self.hook_router_logits(self.router(x))
        weights, indices = self.router.select(logits)
        # Hooks may rewrite the routing (force or forbid experts) and the rest follows.
        indices = self.hook_topk_indices(indices)
        weights = self.hook_topk_weights(weights)
        k = indices.shape[-1]
        out = self.dispatch(x.reshape(b * p, d), indices.reshape(b * p, k), weights.reshape(b * p, k))
        out = out.view(b, p, d)
        if self.cfg.n_shared_experts:
            out = out + self.hook_shared_out(self.shared_experts(x))
        return out

    def dispatch(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Run each token [n, d] through its k experts and add up the weighted outputs."""
        k = indices.shape[1]
        flat = indices.flatten()
        order = flat.argsort(stable=True)  # slots grouped by expert, tokens in order within each
        y = self.experts(x[order // k], torch.bincount(flat, minlength=len(self.experts)))
        w = weights.flatten()[order, None]
        # Weighted in float32 (as the router's weights are); in place when y already is float32.
        y = y.mul_(w) if y.dtype == w.dtype and not y.requires_grad else y.float() * w.float()
        # Back to token-major order (a gather by the inverse permutation) and sum each token's k
        # outputs: deterministic, unlike index_add_ on GPU, and in the order transformers sums them.
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return y[inverse].view(-1, k, x.shape[1]).sum(1).to(x.dtype)


def routed_positions(topk_indices: torch.Tensor, expert: int) -> torch.Tensor:
    """(batch, pos) pairs [n, 2] of the tokens routed to `expert`, in the order of the rows of
    that expert's hook_in / hook_out. topk_indices: the layer's hook_topk_indices [batch, pos, k]."""
    return (topk_indices == expert).any(-1).nonzero()
