"""Known phenomena on real weights (SmolLM2-135M-Instruct): induction heads, IOI, and attribution
patching agreeing with activation patching. Slow: loads the real model."""

import pytest
import torch

import harness
from probes import circuits as C

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return harness.load("smollm2-135m-instruct").eval()


@pytest.fixture(scope="module")
def ioi_results(model):
    prompts = C.ioi(model, n=8, seed=0)
    logit_diff = C.logit_diff(prompts.answers)
    with torch.no_grad():
        clean = logit_diff(model(prompts.clean)).item()
        corrupted = logit_diff(model(prompts.corrupted)).item()
    metric = C.normalized(logit_diff, clean, corrupted)
    patched = C.patch_heads_all_pos(model, prompts.clean, prompts.corrupted, metric)
    attributed = C.attribute_heads(model, prompts.clean, prompts.corrupted, metric)
    return clean, corrupted, patched, attributed


def test_induction_heads(model):
    scores = C.head_scores(model, n=4, seq_len=20)["induction"]
    top = C.top_heads(scores, 5)
    print("induction heads:", top)
    assert top[0][2] >= 0.4


def test_ioi_logit_difference_and_a_few_heads(ioi_results):
    clean, corrupted, patched, _ = ioi_results
    print(f"IOI logit diff clean {clean:.3f} corrupted {corrupted:.3f}; top heads {C.top_heads(patched, 5)}")
    assert clean > 0 and clean > corrupted
    # A few heads carry the effect: one restores at least a third, and only a handful (of 270)
    # move the normalised metric by more than 0.1.
    assert patched.max() >= 0.3
    assert 1 <= int((patched.abs() > 0.1).sum()) <= 15


def test_attribution_patching_agrees_with_activation_patching(ioi_results):
    _, _, patched, attributed = ioi_results
    r = C.correlation(attributed, patched)
    print(f"attribution vs activation patching (IOI heads): r = {r:.3f}")
    assert r >= 0.8
