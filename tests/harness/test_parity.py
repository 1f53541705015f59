"""Every dense family against transformers: logits, per-layer residuals, padded batches, greedy
generation and the in-memory model.

Each tiny model is saved to a folder and loaded back through `harness.load`, the same path
real checkpoints take."""

import pytest

from tests.harness.hf_tiny import CONFIGS, ParityChecks, assert_fused_matches_eager, build, random_tokens, saved_and_loaded

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    return saved_and_loaded(build, request.param, tmp_path_factory)


class TestAgainstTransformers(ParityChecks):
    pass


def test_fused_and_eager_attention_agree(pair):
    name, hf, ours = pair
    assert_fused_matches_eager(ours, random_tokens(hf, (2, 24), 4), name, TOL)
