"""A token mixer without attention heads, registered for the tests: the smallest recurrent mixer
that uses the whole state protocol, standing in for gated DeltaNet until that arrives.

    u = W_in x  (padded positions zeroed, so padding never enters the state)
    c_t = w0 * u_{t-1} + w1 * u_t            a width-2 causal convolution (its window: conv state)
    h_t = decay * h_{t-1} + u_t              a decaying running sum (the recurrent state)
    y_t = W_out (c_t + h_t)
"""

import torch
from torch import nn

from harness.models.config import ModelConfig
from harness.models.kv_cache import RecurrentState
from harness.models.linear import Linear
from harness.models.components import MixerInputs
from harness.models.mixers import register_mixer

NAME = "toy_recurrent"


class ToyRecurrent(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        d = cfg.d_model
        self.in_proj = Linear(d, d, bias=False)
        self.o_proj = Linear(d, d, bias=False)
        self.conv = nn.Parameter(torch.randn(2, d) * 0.5)
        self.decay = 0.8

    def new_state(self, capacity: int) -> RecurrentState:
        return RecurrentState(capacity)

    def forward(self, x: torch.Tensor, inputs: MixerInputs) -> torch.Tensor:
        b, p, d = x.shape
        u = self.in_proj(x)
        if inputs.padding is not None:
            u = u * inputs.padding[..., None].to(u.dtype)
        state = inputs.state
        seen = state is not None and state.conv is not None
        window = state.conv.transpose(1, 2) if seen else u.new_zeros(b, 1, d)  # the last input before this call
        h = state.recurrent if seen else u.new_zeros(b, d)
        seq = torch.cat((window, u), dim=1)
        conv = self.conv[0] * seq[:, :-1] + self.conv[1] * seq[:, 1:]
        sums = []
        for t in range(p):
            h = self.decay * h + u[:, t]
            sums.append(h)
        if state is not None:
            state.update(seq[:, -1:].transpose(1, 2), h)  # conv window [batch, d, 1], memory [batch, d]
        return self.o_proj(conv + torch.stack(sums, dim=1))


register_mixer(NAME, ToyRecurrent, heads=False, summary="test-only decaying sum with a width-2 convolution")


def toy_config(**overrides) -> ModelConfig:
    """Attention, the toy mixer, then attention again (sliding), on a small Llama-like model."""
    fields = dict(family="llama", d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=48, d_vocab=61,
                  n_ctx=64, mixers=["attention", NAME, "attention"], layer_types=["full", "full", "sliding"],
                  sliding_window=5)
    fields.update(overrides)
    return ModelConfig(**fields)


def toy_model(seed: int = 0):
    from harness.models.transformer import HookedLM

    torch.manual_seed(seed)
    model = HookedLM(toy_config()).eval()
    with torch.no_grad():  # norms start at exactly one; move them so a misplaced weight would show
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.add_(torch.randn(p.shape) * 0.1)
    return model
