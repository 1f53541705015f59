"""OLMo 2 (post-norms, QK-norm over the whole projection) and GPT-OSS (attention sinks, alternating
sliding and full layers, biased clamped-SwiGLU experts) against transformers: logits, every layer's
residual, padded batches and greedy generation, through a saved folder as real checkpoints load."""

import pytest
import torch

import harness
from harness.errors import UnsupportedArchitectureError
from tests.harness.hf_tiny import ParityChecks, assert_fused_matches_eager, random_tokens, saved_and_loaded
from tests.harness.hf_tiny_layers import CONFIGS, build

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    return saved_and_loaded(build, request.param, tmp_path_factory)


def _tokens(hf, shape, seed):
    return random_tokens(hf, shape, seed, low=2)


def _left_padded(hf, lengths, seed):
    """A left-padded batch (pad id 0) of random rows of the given lengths, and its 0/1 mask."""
    width = max(lengths)
    batch, mask = torch.zeros(len(lengths), width, dtype=torch.long), torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        batch[row, width - n :], mask[row, width - n :] = _tokens(hf, (n,), seed + row), 1
    return batch, mask


class TestAgainstTransformers(ParityChecks):
    LOW = 2


def test_greedy_generation_of_a_left_padded_batch_identical(pair):
    name, hf, ours = pair
    batch, mask = _left_padded(hf, [9, 4, 7], 11)
    with torch.no_grad():
        ref = hf.generate(batch, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                          pad_token_id=0)
    for use_cache in (True, False):
        got = ours.generate(batch, attention_mask=mask, max_new_tokens=12, stop_at_eos=False, do_sample=False,
                            use_past_kv_cache=use_cache)
        assert got.tolist() == ref.tolist(), (name, use_cache)


def test_olmo2_hooks_fused_and_eager_agree():
    hf = build("olmo2-gqa")
    ours = harness.load(hf)
    assert_fused_matches_eager(ours, _tokens(hf, (2, 24), 4), "olmo2-gqa", TOL)
    names = set(ours.hook_dict)
    assert "blocks.0.ln1_post.hook_normalized" in names and "blocks.0.ln2_post.hook_scale" in names
    assert not any(n.startswith(("blocks.0.ln1.", "blocks.0.ln2.")) for n in names)  # no pre-norms
    assert ours.blocks[0].attn.q_norm.w.shape == (hf.config.num_attention_heads * ours.cfg.d_head,)


def test_gpt_oss_sinks_take_weight_and_the_clamp_bites():
    name = "gpt-oss-sinks-alternating"
    hf = build(name)
    ours = harness.load(hf)
    limit = hf.config.swiglu_limit
    tokens = _tokens(hf, (2, 20), 6)
    with torch.no_grad():
        _, cache = ours.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_pattern", "hook_pre")))
    for layer in range(ours.cfg.n_layers):
        rows = cache[f"blocks.{layer}.attn.hook_pattern"].sum(-1)
        assert (rows < 1 - 1e-3).any() and (rows > 0).all(), layer  # each row gives some weight to its sink
    gates = torch.cat([cache[n].flatten() for n in cache if n.endswith("hook_pre")])
    assert (gates > limit).float().mean() > 0.05, "the SwiGLU clamp never applied"
    sliding = [i for i, t in enumerate(ours.cfg.layer_types) if t == "sliding"]
    pattern = cache[f"blocks.{sliding[0]}.attn.hook_pattern"]
    window = hf.config.sliding_window
    assert pattern[..., window:, :][..., :1].abs().max().item() == 0  # late queries cannot see position 0
    assert ours.cfg.mixers == ["attention"] * ours.cfg.n_layers


def test_weight_processing_refuses_what_these_families_cannot_fold():
    olmo = harness.load(build("olmo2-gqa"))
    with pytest.raises(UnsupportedArchitectureError, match="normalises the sublayers' outputs"):
        olmo.process_weights_(fold_ln=True)
    gpt = harness.load(build("gpt-oss-sinks-alternating"))
    with pytest.raises(UnsupportedArchitectureError, match="sinks"):
        gpt.process_weights_(fold_ln=False, fold_value_biases=True)


def test_gpt_oss_grouped_experts_match_the_per_expert_loop():
    # GPU and bf16 runs take the grouped matmul; it must add the biases and clamp as the loop does.
    experts = harness.load(build("gpt-oss-sinks-alternating")).blocks[0].mlp.experts
    counts = torch.tensor([3, 0, 5, 2, 4])  # an idle expert included
    rows = torch.randn(int(counts.sum()), experts.gate_up_proj.shape[2], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        grouped = experts._grouped(rows, counts)
        looped = experts._looped(rows, counts.tolist(), [experts[i] for i in range(len(experts))])
    assert (grouped - looped).abs().max().item() < 1e-5
