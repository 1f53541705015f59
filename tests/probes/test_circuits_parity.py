"""The patching sweeps equal TransformerLens's own patching functions on the same GPT-2 weights."""

import pytest
import torch
import transformer_lens.patching as tlp

from probes.circuits import ablate, logit_diff, patching
from tests.harness.hf_tiny import gpt2_pair
from tests.probes.circuits_models import pair


@pytest.fixture(scope="module")
def models():
    return gpt2_pair(use_attn_result=False)


CASES = [
    (patching.patch_resid_pre, tlp.get_act_patch_resid_pre),
    (patching.patch_attn_out, tlp.get_act_patch_attn_out),
    (patching.patch_mlp_out, tlp.get_act_patch_mlp_out),
    (patching.patch_heads_all_pos, tlp.get_act_patch_attn_head_out_all_pos),
    (patching.patch_heads_by_pos, tlp.get_act_patch_attn_head_out_by_pos),
]


@pytest.mark.parametrize("ours_fn,tl_fn", CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_sweep_equals_transformer_lens(models, ours_fn, tl_fn, batch_size):
    ours, tl = models
    clean, corrupted, answers = pair(ours, batch=3, length=7)
    metric = logit_diff(answers)
    with torch.no_grad():
        _, clean_cache = tl.run_with_cache(clean)
        expected = tl_fn(tl, corrupted, clean_cache, metric)
    got = ours_fn(ours, clean, corrupted, metric, batch_size=batch_size)
    assert got.shape == expected.shape
    assert (got - expected.cpu()).abs().max() < 1e-4
    assert expected.abs().max() > 1e-2  # the sweep measured something


def test_full_logits_metric_equals_transformer_lens(models):
    """A metric that reads every position gets full logits, as in TransformerLens."""
    ours, tl = models
    clean, corrupted, _ = pair(ours, batch=2, length=5)
    metric = lambda logits: logits.log_softmax(-1)[:, :-1].gather(-1, clean[:, 1:, None]).mean()  # noqa: E731
    with torch.no_grad():
        _, clean_cache = tl.run_with_cache(clean)
        expected = tlp.get_act_patch_resid_pre(tl, corrupted, clean_cache, metric)
    assert torch.allclose(patching.patch_resid_pre(ours, clean, corrupted, metric), expected, atol=1e-4)


def test_ablation_equals_hooked_transformer_lens_run(models):
    ours, tl = models
    clean, corrupted, answers = pair(ours, batch=3, length=7)
    metric = logit_diff(answers)
    with torch.no_grad():
        _, ref = tl.run_with_cache(corrupted)
        mean = ref["blocks.1.attn.hook_z"].mean(0)

        def mean_head_2(z, hook):
            z[:, :, 2] = mean[:, 2]
            return z

        expected = metric(tl.run_with_hooks(clean, fwd_hooks=[("blocks.1.attn.hook_z", mean_head_2)])).item()
    got = ablate(ours, clean, metric, heads=[(1, 2)], method="mean", reference=corrupted)
    assert abs(got - expected) < 1e-4
