"""Mixtral, Qwen3-MoE and DeepSeek-V3 (latent attention, DeepSeekMoE) against transformers:
logits, per-layer residuals and greedy generation, through a saved folder and in memory."""

import pytest
import torch
from transformers import DeepseekV3Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import harness
from harness.models.components import rope_inv_freq
from tests.harness.hf_tiny import ParityChecks, assert_fused_matches_eager, random_tokens, saved_and_loaded
from tests.harness.hf_tiny_moe import CONFIGS, build

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):  # saved one expert at a time, unlike the in-memory 3-D layout
    return saved_and_loaded(build, request.param, tmp_path_factory)


_tokens = random_tokens


class TestAgainstTransformers(ParityChecks):
    """The in-memory model keeps transformers' stacked layout (experts.gate_up_proj [experts, 2h, d])."""


def test_watched_expert_path_matches_too(pair):
    # Watching an expert makes its layer call every expert's hook points along the way.
    name, hf, ours = pair
    tokens = _tokens(hf, (2, 16), 6)
    with torch.no_grad():
        ref = hf(tokens).logits
        looped, cache = ours.run_with_cache(tokens, names_filter=lambda n: n.endswith("experts.1.hook_out"))
    assert cache.keys() and (ref - looped).abs().max().item() < TOL, name


def test_moe_layers_are_where_transformers_has_them(pair):
    name, hf, ours = pair
    for layer, (theirs, mine) in enumerate(zip(hf.model.layers, ours.blocks)):
        assert hasattr(theirs.mlp, "experts") == hasattr(mine.mlp, "experts"), (name, layer)


def test_fused_and_eager_attention_agree(pair):
    name, hf, ours = pair
    assert_fused_matches_eager(ours, _tokens(hf, (2, 20), 4), name, TOL)


@pytest.mark.parametrize("extra", [
    {},
    {"mscale": 0.9, "mscale_all_dim": 0.7},
    {"beta_fast": 16, "beta_slow": 3, "truncate": False},
    {"attention_factor": 1.3, "factor": 2.5},
])
def test_yarn_frequencies_match_transformers(extra):
    params = {"rope_type": "yarn", "rope_theta": 50000.0, "factor": 8.0, "original_max_position_embeddings": 64}
    params.update(extra)
    config = DeepseekV3Config(qk_rope_head_dim=16, max_position_embeddings=512, rope_parameters=dict(params))
    ref_freq, ref_factor = ROPE_INIT_FUNCTIONS["yarn"](config)
    freq, factor = rope_inv_freq(16, params["rope_theta"], config.rope_parameters)
    assert torch.allclose(freq, ref_freq, rtol=1e-6, atol=0)
    assert factor == pytest.approx(ref_factor)


def test_bfloat16_load_keeps_the_routing_bias_in_float32():
    # The bias only ranks experts; rounding it to bf16 could flip near-ties (transformers keeps it fp32).
    model = harness.load(build("deepseek-groups-qlora-yarn"), dtype=torch.bfloat16)
    biases = [m.bias for m in model.modules() if type(m).__name__ == "Router" and getattr(m, "bias", None) is not None]
    assert biases and all(b.dtype == torch.float32 for b in biases)
    assert model.embed.weight.dtype == torch.bfloat16


def test_grouped_matmul_path_matches_the_per_expert_loop(pair):
    # Unhooked experts run in one grouped matmul, except float32 inference on CPU, which loops
    # (faster there through oneDNN). Check the grouped path against the loop directly.
    name, _, ours = pair
    experts = next(m.mlp.experts for m in ours.blocks if hasattr(m.mlp, "experts"))
    g = torch.Generator().manual_seed(7)
    counts = torch.tensor([3, 0, 5] + [2] * (len(experts) - 3))  # an idle expert included
    rows = torch.randn(int(counts.sum()), ours.cfg.d_model, generator=g)
    hooks = [experts[i] for i in range(len(experts))]
    with torch.no_grad():
        grouped = experts._grouped(rows, counts)
        looped = experts._looped(rows, counts.tolist(), hooks)
    assert grouped.shape == looped.shape == rows.shape
    assert (grouped - looped).abs().max().item() < 1e-5, name
