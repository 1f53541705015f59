"""Expert-utilisation counts against the routing hooks, padding, corpora, entropy and the figure."""

import math

import pytest
import torch

from harness.errors import ConfigError
from harness.models import HookedLM, ModelConfig
from probes.experts import ExpertUsage, expert_usage, usage_figure


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(family="mixtral", d_model=32, n_layers=3, n_heads=4, d_head=8, d_mlp=24, d_vocab=60,
                      n_ctx=64, n_experts=6, experts_per_token=2, moe_layers=[0, 2])
    return HookedLM(cfg).eval()


def _tokens(shape, seed=0):
    return torch.randint(0, 60, shape, generator=torch.Generator().manual_seed(seed))


def test_counts_match_the_routing_hooks(model):
    tokens = _tokens((3, 10))
    usage = expert_usage(model, tokens)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: "hook_topk" in n)
    assert usage.layers == [0, 2] and usage.n_tokens == 30
    for row, layer in enumerate(usage.layers):
        indices = cache[f"blocks.{layer}.mlp.hook_topk_indices"].flatten()
        assert usage.counts[row].tolist() == torch.bincount(indices, minlength=6).tolist()
        total = cache[f"blocks.{layer}.mlp.hook_topk_weights"].sum().item()
        assert usage.weight[row].sum().item() == pytest.approx(total, rel=1e-5)
    assert usage.counts.sum(-1).tolist() == [30 * 2, 30 * 2]


def test_padding_is_not_counted_and_a_corpus_adds_up(model):
    a, b = _tokens((1, 12), 1), _tokens((1, 7), 2)
    batch = torch.zeros(2, 12, dtype=torch.long)
    mask = torch.zeros(2, 12, dtype=torch.long)
    batch[0], mask[0] = a[0], 1
    batch[1, :7], mask[1, :7] = b[0], 1  # right padding: real tokens are unaffected by it
    padded = expert_usage(model, batch, attention_mask=mask)
    corpus = expert_usage(model, iter([a, b]))  # one item at a time
    assert padded.n_tokens == corpus.n_tokens == 19
    assert torch.equal(padded.counts, corpus.counts)
    assert torch.equal(expert_usage(model, batch, attention_mask=mask, batch_size=1).counts, padded.counts)


def test_entropy_is_one_when_balanced_and_zero_when_collapsed():
    counts = torch.tensor([[5, 5, 5, 5], [20, 0, 0, 0]])
    usage = ExpertUsage([1, 3], counts, counts.double(), 20, 1)
    assert usage.entropy().tolist() == pytest.approx([1.0, 0.0])
    assert usage.entropy(normalized=False)[0].item() == pytest.approx(math.log(4))
    data = usage.to_dict()
    assert data["fractions"][0] == [0.25] * 4 and data["layers"] == [1, 3]


def test_one_layer_and_the_figure(model):
    usage = expert_usage(model, _tokens((2, 8)), layers=[2])
    assert usage.counts.shape == (1, 6)
    fig = usage_figure(usage)
    assert fig.data[0].type == "heatmap" and len(fig.data[0].z) == 1 and "layer 2" in fig.data[0].y[0]


def test_dense_models_and_dense_layers_are_refused(model):
    with pytest.raises(ConfigError, match="not MoE layers"):
        expert_usage(model, _tokens((1, 4)), layers=[1])
    dense = HookedLM(ModelConfig(family="llama", d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=8,
                                 d_vocab=60, n_ctx=16))
    with pytest.raises(ConfigError, match="no mixture-of-experts"):
        expert_usage(dense, _tokens((1, 4)))
