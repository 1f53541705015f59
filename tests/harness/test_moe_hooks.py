"""Expert-level and latent-attention hooks: names, shapes, and that they mean what they say."""

import pytest
import torch

import harness
from harness.errors import ConfigError, HookNameError
from harness.families import deepseek_v3
from harness.models import HookedLM, ModelConfig
from harness.models.moe import routed_positions
from tests.harness.hf_tiny_moe import CONFIGS, build

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return harness.load(build("deepseek-groups-qlora-yarn"))  # dense layer 0, then MoE with shared experts


@pytest.fixture(scope="module")
def tokens(model):
    return torch.randint(0, model.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(0))


def test_hook_shapes(model, tokens):
    cfg, (b, p) = model.cfg, tokens.shape
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.1.") and "hook_" in n)
    h, k, e = cfg.n_heads, cfg.experts_per_token, cfg.n_experts
    assert cache["blocks.1.mlp.hook_router_logits"].shape == (b, p, e)
    assert cache["blocks.1.mlp.hook_topk_indices"].shape == (b, p, k)
    assert cache["blocks.1.mlp.hook_topk_weights"].shape == (b, p, k)
    assert cache["blocks.1.mlp.hook_shared_out"].shape == (b, p, cfg.d_model)
    assert cache["blocks.1.attn.hook_q_latent"].shape == (b, p, cfg.q_lora_rank)
    assert cache["blocks.1.attn.hook_kv_latent"].shape == (b, p, cfg.kv_lora_rank)
    assert cache["blocks.1.attn.hook_rot_k"].shape == (b, p, h, cfg.d_head)
    assert cache["blocks.1.attn.hook_z"].shape == (b, p, h, cfg.v_head_dim)
    assert cache["blocks.1.attn.hook_result"].shape == (b, p, h, cfg.d_model)
    routed = sum(cache[f"blocks.1.mlp.experts.{i}.hook_in"].shape[0] for i in range(e))
    assert routed == b * p * k  # every token reaches k experts; idle ones show up as empty when watched
    assert cache["blocks.1.mlp.experts.0.hook_post"].shape[1] == cfg.d_expert


def test_weighted_expert_outputs_add_up_to_the_mlp_output(model, tokens):
    cfg = model.cfg
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: ".mlp." in n or n.endswith("hook_mlp_out"))
    for layer in [i for i in range(cfg.n_layers) if cfg.is_moe_layer(i)]:
        pre = f"blocks.{layer}.mlp."
        indices, weights = cache[pre + "hook_topk_indices"], cache[pre + "hook_topk_weights"]
        total = cache[pre + "hook_shared_out"].clone()
        for e in range(cfg.n_experts):
            where = routed_positions(indices, e)
            slot_weight = (weights * (indices == e))[where[:, 0], where[:, 1]].sum(-1)
            total[where[:, 0], where[:, 1]] += slot_weight[:, None] * cache[pre + f"experts.{e}.hook_out"]
        assert (total - cache[f"blocks.{layer}.hook_mlp_out"]).abs().max().item() < TOL, layer


@pytest.mark.parametrize("expert", [0, 5])
def test_zero_ablating_one_expert_changes_exactly_its_tokens(model, tokens, expert):
    last = model.cfg.n_layers - 1
    names = [f"blocks.{last}.hook_mlp_out", f"blocks.{last}.mlp.hook_topk_indices"]
    clean_logits, clean = model.run_with_cache(tokens, names_filter=names)
    ablate = (f"blocks.{last}.mlp.experts.{expert}.hook_out", lambda out, hook: torch.zeros_like(out))
    with model.hooks(fwd_hooks=[ablate]):
        logits, ablated = model.run_with_cache(tokens, names_filter=names)
    routed = (clean[names[1]] == expert).any(-1)
    assert routed.any() and not routed.all()
    # (Allow rounding: the clean run may take the grouped matmul and the hooked one the loop.)
    changed = (ablated[names[0]] - clean[names[0]]).abs().amax(-1) > 1e-6
    assert torch.equal(changed, routed)
    # In the last layer nothing mixes positions afterwards, so the logits change at the same places.
    assert torch.equal((logits - clean_logits).abs().amax(-1) > 1e-6, routed)


def test_patching_the_routing_reroutes_every_token(model, tokens):
    forced = torch.arange(model.cfg.experts_per_token)
    fwd = [("blocks.1.mlp.hook_topk_indices", lambda idx, hook: forced.expand_as(idx).clone())]
    names = [f"blocks.1.mlp.experts.{e}.hook_in" for e in range(model.cfg.n_experts)]
    with model.hooks(fwd_hooks=fwd):
        _, cache = model.run_with_cache(tokens, names_filter=names)
    counts = [cache[n].shape[0] for n in names]
    assert counts == [tokens.numel()] * len(forced) + [0] * (model.cfg.n_experts - len(forced))


def test_caching_every_hook_leaves_the_output_unchanged(model, tokens):
    plain = model(tokens)
    cached, cache = model.run_with_cache(tokens)  # (eager attention then: equal up to rounding)
    assert (plain - cached).abs().max().item() < TOL
    assert "blocks.2.mlp.experts.7.hook_out" in cache and "blocks.0.mlp.hook_post" in cache


@pytest.mark.parametrize("name", ["deepseek-groups-qlora-yarn", "deepseek-no-qlora-halfsplit-rope"])
def test_latent_attention_shortcut_equals_the_hooked_path(name, tokens):
    """Unhooked, the shared rope key is rotated once and copied to every head; with hook_k hooked,
    the full per-head keys are built and rotated. Both give the same rotated keys and logits."""
    model = harness.load(build(name))
    tokens = tokens % model.cfg.d_vocab
    keys = lambda n: n.endswith("attn.hook_rot_k")  # noqa: E731
    plain, fast = model.run_with_cache(tokens, names_filter=keys)
    hooked, slow = model.run_with_cache(tokens, names_filter=lambda n: keys(n) or n.endswith("attn.hook_k"))
    assert (plain - hooked).abs().max().item() < TOL
    for key in fast:
        assert (fast[key] - slow[key]).abs().max().item() < TOL, key


def test_routing_bias_steers_the_choice(model, tokens):
    router = model.blocks[1].mlp.router
    _, before = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_topk_indices")
    saved = router.bias.clone()
    try:
        router.bias.zero_()
        _, after = model.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_topk_indices")
    finally:
        router.bias.copy_(saved)
    key = "blocks.1.mlp.hook_topk_indices"
    assert not torch.equal(before[key].sort(-1).values, after[key].sort(-1).values)


def test_misspelt_hook_name_suggests_the_real_one(model):
    with pytest.raises(HookNameError, match="hook_router_logits"):
        model.run_with_cache(torch.zeros(1, 3, dtype=torch.long), names_filter=["blocks.1.mlp.hook_router_logit"])


def test_latent_attention_has_no_linear_qkv_weights(model):
    assert model.blocks[0].attn.W_O.shape == (model.cfg.n_heads, model.cfg.v_head_dim, model.cfg.d_model)
    with pytest.raises(harness.errors.UnsupportedArchitectureError, match="latent"):
        model.blocks[0].attn.W_Q


def test_moe_model_built_from_a_config_alone():
    cfg = ModelConfig(family="mixtral", d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=24, d_vocab=50,
                      n_ctx=64, n_experts=4, experts_per_token=2, moe_layers=[1])
    model = HookedLM(ModelConfig.from_dict(cfg.to_dict()))
    logits = model(torch.randint(0, 50, (2, 7)))
    assert logits.shape == (2, 7, 50) and torch.isfinite(logits).all()
    assert "blocks.1.mlp.experts.3.hook_out" in model.hook_dict and "blocks.0.mlp.hook_post" in model.hook_dict


BASE = dict(family="mixtral", d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=24, d_vocab=50, n_ctx=64)


@pytest.mark.parametrize("bad, message", [
    (dict(n_experts=4, experts_per_token=5), "experts_per_token=5 must be between 1 and n_experts=4"),
    (dict(n_experts=4, experts_per_token=0), "experts_per_token=0"),
    (dict(experts_per_token=2), "n_experts=0"),
    (dict(n_experts=8, experts_per_token=2, router_n_group=3), "router_n_group=3 must divide n_experts=8"),
    (dict(n_experts=8, experts_per_token=2, router_n_group=4, router_topk_group=5), "router_topk_group=5"),
    (dict(n_experts=8, experts_per_token=5, router_n_group=4, router_topk_group=2), "exceeds the 4 experts"),
    (dict(n_experts=4, experts_per_token=2, router_scoring="relu"), "router_scoring"),
    (dict(n_experts=4, experts_per_token=2, moe_layers=[2]), r"moe_layers \[2\] are outside"),
    (dict(kv_lora_rank=16), "rotary_dim"),
    (dict(q_lora_rank=16), "q_lora_rank is set but kv_lora_rank is not"),
    (dict(rope_interleave=True), "rope_interleave is only implemented for latent attention"),
])
def test_inconsistent_expert_or_latent_settings_are_config_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**BASE, **bad)


def test_inconsistent_hf_deepseek_config_is_a_config_error():
    hf = CONFIGS["deepseek-groups-qlora-yarn"][1]()
    hf.n_group = 3  # 8 experts do not split into 3 groups
    with pytest.raises(ConfigError, match="router_n_group=3 must divide n_experts=8"):
        deepseek_v3.config_from_hf(hf)
