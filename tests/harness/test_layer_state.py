"""The per-layer generation state: for every kind of token mixer, decoding step by step (and in
chunks) with the state equals recomputing the whole prefix, left-padded rows included; selecting
and reordering rows (as lm-eval scoring and beam search do) keeps each row's history; and a layer
pattern naming an unknown mixer is one clear line."""

import pytest
import torch

import harness
from harness.errors import HarnessError, UnknownMixerError, UnsupportedArchitectureError
from harness.models.kv_cache import KVCache, KVState, RecurrentState
from tests.harness import hf_tiny, hf_tiny_layers, hf_tiny_moe
from tests.harness.toy_mixer import NAME as TOY, toy_config, toy_model

TOL = 1e-4

MODELS = {
    # what it exercises: how to build it
    "attention, GQA": lambda: harness.load(hf_tiny.build("llama-gqa3-llama3rope")),
    "attention, sliding window shorter than the prompt": lambda: harness.load(
        hf_tiny.build("mistral-window-shorter-than-prompt")),
    "attention, soft-capped, sliding and full": lambda: harness.load(hf_tiny.build("gemma3-softcapped")),
    "attention, sinks, sliding and full": lambda: harness.load(hf_tiny_layers.build("gpt-oss-sinks-alternating")),
    "attention, whole-projection QK-norm, post-norms": lambda: harness.load(hf_tiny_layers.build("olmo2-gqa")),
    "latent attention": lambda: harness.load(hf_tiny_moe.build("deepseek-no-qlora-halfsplit-rope")),
    "recurrent mixer without heads, between attention layers": toy_model,
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param]().eval()


def _batch(model, width=14, pad=4, seed=0):
    tokens = torch.randint(2, model.cfg.d_vocab, (2, width), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(2, width, dtype=torch.long)
    mask[1, :pad] = 0  # row 1 is left-padded
    tokens[1, :pad] = 0
    return tokens, mask


@torch.no_grad()
def test_step_by_step_equals_the_whole_prefix(model):
    tokens, mask = _batch(model)
    full = model(tokens, attention_mask=mask)
    cache = KVCache(model.cfg.n_layers, capacity=10)  # smaller than the sequence: the state must grow
    parts = [model(tokens[:, :6], attention_mask=mask[:, :6], past_kv_cache=cache),  # the prompt
             model(tokens[:, 6:9], past_kv_cache=cache)]  # a chunk after it
    parts += [model(tokens[:, i : i + 1], past_kv_cache=cache) for i in range(9, tokens.shape[1])]
    stepped = torch.cat(parts, dim=1)
    real = mask.bool()
    assert cache.length == tokens.shape[1]
    assert (stepped[real] - full[real]).abs().max().item() < TOL


@torch.no_grad()
def test_each_layer_keeps_the_state_its_mixer_makes(model):
    cache = KVCache(model.cfg.n_layers)
    model(torch.tensor([[3, 4, 5]]), past_kv_cache=cache)
    for layer, state in enumerate(cache.layers):
        expected = RecurrentState if model.cfg.mixers[layer] == TOY else KVState
        assert isinstance(state, expected), layer


@torch.no_grad()
def test_selected_and_reordered_rows_keep_their_history(model):
    tokens, _ = _batch(model, pad=0, seed=1)
    rows = torch.tensor([1, 0, 1])
    full = model(tokens[rows])
    cache = KVCache(model.cfg.n_layers)
    model(tokens[:, :7], past_kv_cache=cache)
    cache.select_rows(torch.tensor([1, 0]))  # swap the two rows ...
    cache.reorder(torch.tensor([0, 1, 0]))  # ... then as beam search does, with a repeat: rows 1, 0, 1
    rest = torch.cat([model(tokens[rows, i : i + 1], past_kv_cache=cache) for i in range(7, tokens.shape[1])], dim=1)
    assert (rest - full[:, 7:]).abs().max().item() < TOL


@torch.no_grad()
def test_greedy_generation_with_the_state_equals_without(model):
    tokens, mask = _batch(model, width=8, pad=3, seed=2)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, stop_at_eos=False, do_sample=False)
    with_state = model.generate(tokens, use_past_kv_cache=True, **kwargs)
    assert with_state.tolist() == model.generate(tokens, use_past_kv_cache=False, **kwargs).tolist()


def test_an_unknown_mixer_is_one_clear_line():
    with pytest.raises(UnknownMixerError) as err:
        toy_config(mixers=["attention", "mamba", "attention"])
    message = str(err.value)
    assert isinstance(err.value, HarnessError) and "\n" not in message
    assert "layer 1" in message and "'mamba'" in message and "attention" in message and TOY in message
    with pytest.raises(HarnessError, match="2 mixers for 3 layers"):
        toy_config(mixers=["attention", "attention"])


def test_an_unknown_layer_kind_in_a_transformers_config_is_one_clear_line():
    import transformers as tf

    config = tf.Qwen3Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                            layer_types=["full_attention", "linear_attention"])
    with pytest.raises(UnsupportedArchitectureError, match="linear_attention") as err:
        harness.load(tf.Qwen3ForCausalLM(config))
    assert "\n" not in str(err.value)
