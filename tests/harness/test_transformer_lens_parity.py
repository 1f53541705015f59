"""Every hook GPT-2 shares with TransformerLens holds the same value as TransformerLens's own
HookedTransformer (no weight processing) on the same weights."""

import pytest
import torch

from tests.harness.hf_tiny import gpt2_pair


@pytest.fixture(scope="module")
def models():
    return gpt2_pair(use_attn_result=True)


def test_every_shared_hook_matches_transformer_lens(models):
    ours, tl = models
    tokens = torch.randint(0, ours.cfg.d_vocab, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        our_logits, our_cache = ours.run_with_cache(tokens)
        tl_logits, tl_cache = tl.run_with_cache(tokens)
    shared = sorted(set(our_cache.keys()) & set(tl_cache.keys()))
    # Every hook we have for GPT-2 exists in TransformerLens, so nothing escapes the comparison.
    assert set(our_cache.keys()) <= set(tl_cache.keys()), set(our_cache.keys()) - set(tl_cache.keys())
    assert len(shared) == len(ours.hook_dict) == 4 + 18 * ours.cfg.n_layers
    for name in shared:
        a, b = our_cache[name], tl_cache[name]
        assert a.shape == b.shape, name
        finite = torch.isfinite(b)
        assert torch.equal(finite, torch.isfinite(a)), name  # masked scores are -inf in both
        assert (a[finite] - b[finite]).abs().max().item() < 1e-4, name
    assert (our_logits - tl_logits).abs().max().item() < 1e-4


def test_stop_at_layer_and_hooks_behave_like_transformer_lens(models):
    ours, tl = models
    tokens = torch.randint(0, ours.cfg.d_vocab, (1, 9), generator=torch.Generator().manual_seed(1))

    def zero_head_1(z, hook):
        z[:, :, 1] = 0.0
        return z

    with torch.no_grad():
        assert torch.allclose(ours(tokens, stop_at_layer=2), tl(tokens, stop_at_layer=2), atol=1e-4)
        hooks = [("blocks.1.attn.hook_z", zero_head_1)]
        ablated_ours = ours.run_with_hooks(tokens, fwd_hooks=hooks)
        ablated_tl = tl.run_with_hooks(tokens, fwd_hooks=hooks)
        assert torch.allclose(ablated_ours, ablated_tl, atol=1e-4)
        assert not torch.allclose(ablated_ours, ours(tokens), atol=1e-3)  # the ablation did something
