"""Small randomly initialised transformers models, one per family, with awkward shapes."""

import torch
import transformers as tf


def _perturb(model, seed: int):
    # HF initialises norms to exactly 1 (or 0 for Gemma); random values catch a misplaced weight.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


ROPE_LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

CONFIGS = {
    # name: (model class, config kwargs, attn implementation)
    "gpt2-odd-heads": (tf.GPT2LMHeadModel, dict(config=tf.GPT2Config(
        vocab_size=97, n_embd=60, n_layer=3, n_head=5, n_positions=64)), "sdpa"),
    "llama-gqa3-llama3rope": (tf.LlamaForCausalLM, dict(config=tf.LlamaConfig(
        vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=128, rope_parameters=ROPE_LLAMA3,
        tie_word_embeddings=False)), "sdpa"),
    "llama-mqa-tied-odd-heads": (tf.LlamaForCausalLM, dict(config=tf.LlamaConfig(
        vocab_size=89, hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=5,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True)), "sdpa"),
    "qwen3-qknorm-sliding": (tf.Qwen3ForCausalLM, dict(config=tf.Qwen3Config(
        vocab_size=103, hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=3,
        num_key_value_heads=1, head_dim=20, max_position_embeddings=128, use_sliding_window=True,
        sliding_window=7, max_window_layers=1, tie_word_embeddings=True)), "sdpa"),
    "gemma3-interleaved": (tf.Gemma3ForCausalLM, dict(config=tf.Gemma3TextConfig(
        vocab_size=107, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=3,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=128, sliding_window=6,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
        query_pre_attn_scalar=24, rope_parameters={
            "full_attention": {"rope_type": "linear", "rope_theta": 1_000_000.0, "factor": 4.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}})), "sdpa"),
    "gemma3-softcapped": (tf.Gemma3ForCausalLM, dict(config=tf.Gemma3TextConfig(
        vocab_size=107, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=128, sliding_window=5,
        layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=16,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0)), "eager"),
    "mistral-window-shorter-than-prompt": (tf.MistralForCausalLM, dict(config=tf.MistralConfig(
        vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, sliding_window=9)), "sdpa"),
}


def build(name: str, seed: int = 0):
    cls, kwargs, attn = CONFIGS[name]
    torch.manual_seed(seed)
    kwargs["config"]._attn_implementation = attn
    return _perturb(cls(**kwargs), seed)


def saved_and_loaded(build, name: str, tmp_path_factory):
    """(name, transformers model, ours): the tiny model `build(name)` saved to a folder and loaded back
    through `harness.load`, the path real checkpoints take."""
    import harness

    hf = build(name)
    folder = tmp_path_factory.mktemp(name)
    hf.save_pretrained(folder)
    return name, hf, harness.load(folder)


def assert_left_padded_matches(hf, ours, rows, name: str, tol: float = 1e-4):
    """The [1, n] token rows batched with left padding (pad id 0, mask 0): each row's real positions
    give the logits of the row run alone, and transformers' given the same mask and positions counted
    from the first real token (what its generate does for every family)."""
    width = max(row.shape[-1] for row in rows)
    batch, mask = torch.zeros(len(rows), width, dtype=torch.long), torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, width - row.shape[-1]:], mask[i, width - row.shape[-1]:] = row[0], 1
    with torch.no_grad():
        padded = ours(batch, attention_mask=mask)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ref = hf(batch, attention_mask=mask, position_ids=positions).logits
        for i, row in enumerate(rows):
            real = slice(width - row.shape[-1], None)
            assert (padded[i, real] - ours(row)[0]).abs().max().item() < tol, (name, i)
            assert (ref[i, real] - padded[i, real]).abs().max().item() < tol, (name, i)


def random_tokens(hf, shape, seed: int, low: int = 0):
    return torch.randint(low, hf.config.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


class ParityChecks:
    """What every tiny family passes against transformers: logits and every layer, the in-memory model
    loaded directly, a left-padded batch, greedy generation. A test module subclasses it (as Test...)
    next to its `pair` fixture ((name, transformers model, ours loaded from the saved folder))."""

    LOW = 0  # the lowest token id the checks feed

    def tokens(self, hf, shape, seed: int):
        return random_tokens(hf, shape, seed, self.LOW)

    def test_logits_and_every_layer_match(self, pair):
        name, hf, ours = pair
        assert_layers_match(hf, ours, self.tokens(hf, (2, 40), 1), name)

    def test_in_memory_model_matches(self, pair):
        import harness

        name, hf, _ = pair
        ours = harness.load(hf)
        tokens = self.tokens(hf, (1, 25), 5)
        with torch.no_grad():
            assert (hf(tokens).logits - ours(tokens)).abs().max().item() < 1e-4, name

    def test_padded_batch_matches(self, pair):
        name, hf, ours = pair
        assert_left_padded_matches(hf, ours, [self.tokens(hf, (1, 24), 2), self.tokens(hf, (1, 15), 3)], name)

    def test_greedy_generation_identical(self, pair):
        name, hf, ours = pair
        assert_greedy_matches(hf, ours, self.tokens(hf, (1, 6), 3), name)


def assert_layers_match(hf, ours, tokens, name: str, tol: float = 1e-4):
    """Logits and every layer's hook_resid_post against transformers' hidden states."""
    with torch.no_grad():
        ref = hf(tokens, output_hidden_states=True)
        logits, cache = ours.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert (ref.logits - logits).abs().max().item() < tol, name
    n = ours.cfg.n_layers
    for layer in range(n - 1):
        diff = (ref.hidden_states[layer + 1] - cache[f"blocks.{layer}.hook_resid_post"]).abs().max().item()
        assert diff < tol, (name, layer, diff)
    # transformers' last hidden state has the final norm applied.
    last = ours.ln_final(cache[f"blocks.{n - 1}.hook_resid_post"])
    assert (ref.hidden_states[n] - last).abs().max().item() < tol, name


def assert_greedy_matches(hf, ours, prompt, name: str, steps: int = 20):
    """Greedy generation equals transformers' token for token, with and without our KV cache."""
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=steps, do_sample=False, min_new_tokens=steps)
    for use_cache in (True, False):
        got = ours.generate(prompt, max_new_tokens=steps, stop_at_eos=False, use_past_kv_cache=use_cache,
                            do_sample=False)
        assert got.tolist() == ref.tolist(), (name, use_cache)


def assert_fused_matches_eager(ours, tokens, name: str, tol: float = 1e-4):
    """Hooking the pattern switches attention to the eager path; the output must not change."""
    with torch.no_grad():
        fused = ours(tokens)
        eager, cache = ours.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert (fused - eager).abs().max().item() < tol, name
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(()), atol=1e-5)
    assert pattern.triu(1).abs().max().item() == 0  # causal


def tl_gpt2_config(c, **extra):
    """TransformerLens's config for a transformers GPT2Config (no BOS, as the tests feed tokens)."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head, d_mlp=4 * c.n_embd,
        d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new", normalization_type="LN", eps=c.layer_norm_epsilon,
        positional_embedding_type="standard", default_prepend_bos=False, **extra)


def gpt2_pair(use_attn_result: bool = False):
    """(ours, TransformerLens) on the same tiny GPT-2 ("gpt2-odd-heads"), TransformerLens without
    weight processing so every activation is comparable."""
    import harness
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    hf = build("gpt2-odd-heads")
    tl_cfg = tl_gpt2_config(hf.config, use_attn_result=use_attn_result)
    tl = HookedTransformer(tl_cfg)
    tl.load_state_dict(convert_gpt2_weights(hf, tl_cfg), strict=False)
    return harness.load(hf).eval(), tl.eval()
