"""Every dense family against transformers: logits, per-layer residuals and greedy generation.

Each tiny model is saved to a folder and loaded back through `harness.load`, the same path
real checkpoints take."""

import pytest
import torch

import harness
from tests.harness.hf_tiny import (
    CONFIGS,
    assert_fused_matches_eager,
    assert_greedy_matches,
    assert_layers_match,
    build,
)

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    hf = build(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return request.param, hf, harness.load(folder)


def test_logits_and_every_layer_match(pair):
    name, hf, ours = pair
    tokens = torch.randint(0, hf.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    assert_layers_match(hf, ours, tokens, name, TOL)


def test_padded_batch_matches_unpadded_rows(pair):
    name, hf, ours = pair
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, hf.config.vocab_size, (1, 30), generator=gen), torch.randint(0, hf.config.vocab_size, (1, 18), generator=gen)
    batch = torch.zeros(2, 30, dtype=torch.long)
    mask = torch.zeros(2, 30, dtype=torch.long)
    batch[0], mask[0] = a[0], 1
    batch[1, 12:], mask[1, 12:] = b[0], 1  # left padding
    with torch.no_grad():
        padded = ours(batch, attention_mask=mask)
        assert (padded[0] - ours(a)[0]).abs().max().item() < TOL, name
        assert (padded[1, 12:] - ours(b)[0]).abs().max().item() < TOL, name
        # Real tokens count positions from zero (what transformers' generate does for every family).
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ref = hf(batch, attention_mask=mask, position_ids=positions).logits
    assert (ref[1, 12:] - padded[1, 12:]).abs().max().item() < TOL, name


def test_greedy_generation_identical(pair):
    name, hf, ours = pair
    prompt = torch.randint(0, hf.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(3))
    assert_greedy_matches(hf, ours, prompt, name)


def test_fused_and_eager_attention_agree(pair):
    name, hf, ours = pair
    tokens = torch.randint(0, hf.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(4))
    assert_fused_matches_eager(ours, tokens, name, TOL)
