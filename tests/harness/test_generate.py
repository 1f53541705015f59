"""Samplers and batched generation."""

import pytest
import torch

import harness
from harness.models.generate import filter_logits, sample_next
from tests.harness.hf_tiny import build


def kept(logits):
    return set(torch.nonzero(logits[0] > torch.finfo(logits.dtype).min).flatten().tolist())


def test_top_k_top_p_min_p_keep_the_right_tokens():
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.07, 0.03]])
    logits = probs.log()
    assert kept(filter_logits(logits, top_k=2)) == {0, 1}
    assert kept(filter_logits(logits, top_p=0.7)) == {0, 1}  # 0.5 < 0.7, 0.75 reaches it
    assert kept(filter_logits(logits, top_p=0.5)) == {0}
    assert kept(filter_logits(logits, min_p=0.4)) == {0, 1}  # keeps p >= 0.4 * 0.5
    assert kept(filter_logits(logits, min_p=0.1)) == {0, 1, 2, 3}


def test_sampling_is_seeded_and_respects_the_filter():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]]).repeat(500, 1)
    gen = torch.Generator().manual_seed(0)
    draws = sample_next(logits, True, temperature=1.0, top_k=2, generator=gen)
    assert set(draws.tolist()) == {0, 1}
    again = sample_next(logits, True, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    assert torch.equal(sample_next(logits, False), torch.zeros(500, dtype=torch.long))


@pytest.fixture(scope="module")
def model():
    return harness.load(build("llama-gqa3-llama3rope"))


def test_left_padded_batch_generates_what_each_row_does_alone(model):
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randint(0, 101, (1, 9), generator=gen), torch.randint(0, 101, (1, 4), generator=gen)
    batch = torch.zeros(2, 9, dtype=torch.long)
    mask = torch.zeros(2, 9, dtype=torch.long)
    batch[0], mask[0] = a[0], 1
    batch[1, 5:], mask[1, 5:] = b[0], 1
    out = model.generate(batch, attention_mask=mask, max_new_tokens=8, stop_at_eos=False, do_sample=False)
    assert out[0, 9:].tolist() == model.generate(a, max_new_tokens=8, stop_at_eos=False, do_sample=False)[0, 9:].tolist()
    assert out[1, 9:].tolist() == model.generate(b, max_new_tokens=8, stop_at_eos=False, do_sample=False)[0, 4:].tolist()


def test_sampled_generation_reproducible_with_seed(model):
    prompt = torch.tensor([[1, 2, 3]])
    kwargs = dict(max_new_tokens=10, do_sample=True, temperature=0.9, top_p=0.9, min_p=0.05, stop_at_eos=False)
    assert torch.equal(model.generate(prompt, seed=3, **kwargs), model.generate(prompt, seed=3, **kwargs))
